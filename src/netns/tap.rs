//! Opening TAP devices with the virtio-net header and offloads.
//!
//! The `tun-tap` crate opens TAPs with `IFF_TAP|IFF_NO_PI` only; tapnet needs `IFF_VNET_HDR`,
//! `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD` to exchange 64 KiB GSO super-frames with the kernel, so
//! this module does the few ioctls itself (see README, "Dependencies").

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::datapath::frame::VNET_HDR_LEN;
use crate::error::{Context, Error, Result};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Socket buffer for frames we write into the TAP: room for a burst of 64 KiB super-frames.
const SNDBUF: libc::c_int = 4 << 20;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

nix::ioctl_write_ptr_bad!(tunsetiff, 0x4004_54ca, IfReqFlags);
nix::ioctl_write_int_bad!(tunsetoffload, 0x4004_54d0);
nix::ioctl_write_ptr_bad!(tunsetvnethdrsz, 0x4004_54d8, libc::c_int);
nix::ioctl_write_ptr_bad!(tunsetsndbuf, 0x4004_54d4, libc::c_int);
nix::ioctl_write_int_bad!(tunsetpersist, 0x4004_54cb);

/// Which offloads a TAP port takes. With `Off` the kernel segments and checksums everything
/// before handing frames to us, as with a plain TAP; the virtio-net header stays, always zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    On,
    Off,
}

/// Create TAP `name` in the calling thread's network namespace and return its non-blocking fd.
/// The device lives as long as the fd (it is not persistent).
pub fn open_tap(name: &str, offload: Offload) -> Result<OwnedFd> {
    let mut fds = open_tap_queues(name, offload, 1)?;
    fds.pop()
        .ok_or_else(|| Error::invalid(format!("TAP {name} has no queue")))
}

/// Create TAP `name` with `queues` queues (`IFF_MULTI_QUEUE` when more than one), one
/// non-blocking fd each. The kernel puts each flow a sandbox sends on one queue, and the reply
/// of a flow written through a queue on that same queue (tun's flow table), so a worker that
/// reads one queue of every port sees the replies to what it forwarded. A kernel that refuses
/// multi-queue TAPs gets one queue.
pub fn open_tap_queues(name: &str, offload: Offload, queues: usize) -> Result<Vec<OwnedFd>> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::invalid(format!("bad interface name {name:?}")));
    }
    let queues = queues.clamp(1, MAX_QUEUES);
    let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if queues > 1 {
        flags |= IFF_MULTI_QUEUE;
    }
    let first = match attach_queue(name, flags) {
        Ok(fd) => fd,
        Err(_) if queues > 1 => return open_tap_queues(name, offload, 1),
        Err(e) => return Err(e),
    };
    let raw = first.as_raw_fd();
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: pointer to a live c_int.
    unsafe { tunsetvnethdrsz(raw, &hdr_len) }
        .context(|| format!("set virtio-net header size on {name}"))?;
    set_offload(raw, name, offload)?;
    // SAFETY: pointer to a live c_int.
    unsafe { tunsetsndbuf(raw, &SNDBUF) }.context(|| format!("set send buffer on {name}"))?;
    let mut fds = vec![first];
    for _ in 1..queues {
        // Header size, offloads and send buffer belong to the device: the new queue has them.
        fds.push(attach_queue(name, flags)?);
    }
    Ok(fds)
}

/// Queues tapnet asks for at most (the kernel allows 256); the datapath asks no more.
pub const MAX_QUEUES: usize = 64;

/// Open /dev/net/tun and attach it to TAP `name` (created by the first call) with `flags`.
fn attach_queue(name: &str, flags: libc::c_short) -> Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .context(|| "open /dev/net/tun".into())?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the fd is an open tun fd; req is a properly sized ifreq.
    unsafe { tunsetiff(file.as_raw_fd(), &req) }.context(|| format!("create TAP {name}"))?;
    Ok(file.into())
}

/// Keep TAP `name` (open as `fd`) when its last fd closes, or stop keeping it. A Docker
/// endpoint's TAP is persistent so that it stays in its container across a daemon restart,
/// and the restarted daemon attaches to it again by name.
pub fn set_persist(fd: &impl AsRawFd, name: &str, on: bool) -> Result<()> {
    // SAFETY: TUNSETPERSIST takes its flag by value.
    unsafe { tunsetpersist(fd.as_raw_fd(), libc::c_int::from(on)) }.context(|| {
        format!(
            "make TAP {name} {}",
            if on { "persistent" } else { "non-persistent" }
        )
    })?;
    Ok(())
}

/// The name of the link with MAC `mac` in the calling thread's network namespace.
pub fn link_with_mac(mac: crate::datapath::frame::MacAddr) -> Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().context(|| "list interfaces".into())?;
    for a in addrs {
        if let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr())
            && link.addr() == Some(mac.0)
        {
            return Ok(a.interface_name);
        }
    }
    Err(Error::not_found("interface with MAC", mac.to_string()))
}

fn set_offload(fd: libc::c_int, name: &str, offload: Offload) -> Result<()> {
    if offload == Offload::Off {
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        unsafe { tunsetoffload(fd, 0) }.context(|| format!("clear offloads on {name}"))?;
        return Ok(());
    }
    let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // UDP segmentation offload arrived in Linux 6.2; older kernels refuse the flags.
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { tunsetoffload(fd, (base | TUN_F_USO4 | TUN_F_USO6) as libc::c_int) }.is_ok() {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { tunsetoffload(fd, base as libc::c_int) }
        .context(|| format!("enable offloads on {name}"))?;
    Ok(())
}
