//! Opening TAP devices with the virtio-net header and offloads.
//!
//! The `tun-tap` crate opens TAPs with `IFF_TAP|IFF_NO_PI` only; tapnet needs `IFF_VNET_HDR`,
//! `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD` to exchange 64 KiB GSO super-frames with the kernel, so
//! this module does the few ioctls itself (see README, "Dependencies").

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Context, Error, Result};
use crate::netns::netlink::{Netlink, link_index};
use crate::wire::VNET_HDR_LEN;

use libc::{
    IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
    TUN_F_USO4, TUN_F_USO6,
};

/// Socket buffer for frames we write into the TAP: room for a burst of 64 KiB super-frames.
const SNDBUF: libc::c_int = 4 << 20;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

// TUNSETIFF reads the ifreq and writes the device's name back (hence read-write).
// The request numbers are libc's (the kernel's <linux/if_tun.h>), as Firecracker takes them.
nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, IfReqFlags);
nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
nix::ioctl_write_ptr_bad!(tunsetvnethdrsz, libc::TUNSETVNETHDRSZ, libc::c_int);
nix::ioctl_write_ptr_bad!(tunsetsndbuf, libc::TUNSETSNDBUF, libc::c_int);
nix::ioctl_write_int_bad!(tunsetpersist, libc::TUNSETPERSIST);
nix::ioctl_read_bad!(tungetiff, libc::TUNGETIFF, IfReqFlags);

/// Which offloads a TAP port takes. With `Off` the kernel segments and checksums everything
/// before handing frames to us, as with a plain TAP; the virtio-net header stays, always zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    On,
    Off,
}

/// Open TAP `name` in the calling thread's network namespace, creating it when it does not
/// exist, and return its non-blocking fd. An existing TAP of that name is attached to (a Docker
/// endpoint's persistent TAP, found again after a restart). The device lives as long as its fds
/// unless it is persistent.
pub fn open_tap(name: &str, offload: Offload) -> Result<OwnedFd> {
    check_name(name)?;
    super::slow_for_test();
    let (_, mut fds) = open_queues(name, offload, 1)?;
    fds.pop()
        .ok_or_else(|| Error::invalid(format!("TAP {name} has no queue")))
}

/// The name a new TAP gets before [`open_tap_queues`] renames it. A name with `%d` is never a
/// device's name (the kernel expands it whenever it names a device), so TUNSETIFF with it
/// cannot attach to an existing device: it makes a new one, `tapnet0`, `tapnet1`, ...
const FRESH_NAME: &str = "tapnet%d";

/// Create a new TAP `name` with `queues` queues (`IFF_MULTI_QUEUE` when more than one), one
/// non-blocking fd each, in the calling thread's namespace; fail, touching nothing, when the
/// namespace has a link of that name already. The kernel puts each flow a sandbox sends on one
/// queue, and the reply of a flow written through a queue on that same queue (tun's flow
/// table), so a worker that reads one queue of every port sees the replies to what it
/// forwarded. A kernel that refuses multi-queue TAPs gets one queue.
///
/// TUNSETIFF with an existing TAP's name attaches to that TAP (and with `IFF_MULTI_QUEUE` adds
/// a queue to it), and checking for the name first would leave a window. So the TAP is made
/// under a kernel-chosen free name and renamed over netlink: the kernel refuses the rename with
/// EEXIST when `name` is taken, atomically. On failure the fds close and the new TAP, not
/// persistent, goes with them.
pub fn open_tap_queues(name: &str, offload: Offload, queues: usize) -> Result<Vec<OwnedFd>> {
    check_name(name)?;
    super::slow_for_test();
    let (fresh, fds) = open_queues(FRESH_NAME, offload, queues)?;
    let index = link_index(&fresh)?;
    match Netlink::open()?.rename_link(index, &fresh, name) {
        Ok(()) => Ok(fds),
        Err(Error::Netlink(m)) if m.contains("EEXIST") => Err(Error::exists("interface", name)),
        Err(e) => Err(e),
    }
}

/// Check that `fds`, queues kept across a daemon's restart (the fd keeper's), are still
/// attached to TAP `name` (a TAP deleted in its sandbox, or gone with its namespace, has
/// detached them) and are `queues` in number, and set the offloads the daemon now asks for.
pub fn reuse_queues(name: &str, offload: Offload, queues: usize, fds: &[OwnedFd]) -> Result<()> {
    let first = fds
        .first()
        .ok_or_else(|| Error::invalid(format!("TAP {name}: no queue kept")))?;
    if fds.len() != queues.clamp(1, MAX_QUEUES) {
        return Err(Error::invalid(format!(
            "TAP {name}: {} queue(s) kept, the datapath polls {queues}",
            fds.len()
        )));
    }
    for fd in fds {
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: req is a properly sized ifreq, which the kernel writes the name and flags of
        // the fd's device into.
        unsafe { tungetiff(fd.as_raw_fd(), &mut req) }
            .context(|| format!("find TAP {name} of a kept queue"))?;
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(0);
        if &req.name[..len] != name.as_bytes() {
            return Err(Error::invalid(format!(
                "a kept queue of TAP {name} belongs to {}",
                String::from_utf8_lossy(&req.name[..len])
            )));
        }
    }
    set_offload(first.as_raw_fd(), name, offload)
}

/// A name the kernel takes as it is: `%` would be expanded to a free number.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('%') {
        return Err(Error::invalid(format!("bad interface name {name:?}")));
    }
    Ok(())
}

/// Queues tapnet asks for at most (the kernel allows 256); the datapath asks no more.
pub const MAX_QUEUES: usize = crate::wire::vnet::MAX_TAP_QUEUES;

/// Open `queues` queues of TAP `name` (a `%d` pattern makes a new one) and say the TAP's name.
fn open_queues(name: &str, offload: Offload, queues: usize) -> Result<(String, Vec<OwnedFd>)> {
    let queues = queues.clamp(1, MAX_QUEUES);
    // libc has the flags as c_int; ifreq's field is a short, and they all fit in one.
    let mut flags = (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) as libc::c_short;
    if queues > 1 {
        flags |= IFF_MULTI_QUEUE as libc::c_short;
    }
    if napi_requested() {
        flags |= libc::IFF_NAPI as libc::c_short;
    }
    let (first, name) = match attach_queue(name, flags) {
        Ok(opened) => opened,
        Err(_) if queues > 1 => return open_queues(name, offload, 1),
        Err(e) => return Err(e),
    };
    let raw = first.as_raw_fd();
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: pointer to a live c_int.
    unsafe { tunsetvnethdrsz(raw, &hdr_len) }
        .context(|| format!("set virtio-net header size on {name}"))?;
    set_offload(raw, &name, offload)?;
    // SAFETY: pointer to a live c_int.
    unsafe { tunsetsndbuf(raw, &SNDBUF) }.context(|| format!("set send buffer on {name}"))?;
    let mut fds = vec![first];
    for _ in 1..queues {
        // Header size, offloads and send buffer belong to the device: the new queue has them.
        // The first queue's name, not a pattern again: these join the TAP just made.
        fds.push(attach_queue(&name, flags)?.0);
    }
    Ok((name, fds))
}

/// `TAPNET_TAP_NAPI=1` in the daemon's environment: new TAP queues take `IFF_NAPI`, so the
/// kernel hands the frames tapnet writes to the receiving stack through NAPI (and GRO) rather
/// than one by one. An experiment for BENCHMARKS.md ("IFF_NAPI"), off by default.
fn napi_requested() -> bool {
    static NAPI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NAPI.get_or_init(|| std::env::var_os("TAPNET_TAP_NAPI").is_some_and(|v| v == "1"))
}

/// Open /dev/net/tun and attach it to TAP `name` with `flags`, the kernel creating the TAP
/// when no device has that name; returns the fd and the TAP's name as the kernel gives it back (a `%d` pattern expanded).
fn attach_queue(name: &str, flags: libc::c_short) -> Result<(OwnedFd, String)> {
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
    // SAFETY: the fd is an open tun fd; req is a properly sized ifreq, which the kernel
    // writes the device's name back into.
    unsafe { tunsetiff(file.as_raw_fd(), &mut req) }.context(|| format!("create TAP {name}"))?;
    let len = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.name.len());
    let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
    Ok((file.into(), name))
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
pub fn link_with_mac(mac: crate::wire::MacAddr) -> Result<String> {
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
