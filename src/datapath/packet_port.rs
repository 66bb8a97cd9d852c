//! An existing interface of the daemon's namespace as a switch port (`tapnet port add --iface`):
//! a VMM's TAP, a veth end, a NIC. An AF_PACKET socket with `PACKET_VNET_HDR` reads and writes
//! frames behind the same 12-byte virtio-net header a TAP queue uses, so its fd is the port's
//! fd as is: the workers poll it, super-frames pass whole (the kernel segments what the device
//! cannot take), and no thread of its own is needed. The interface is set up and promiscuous
//! (a packet-socket membership, gone with the socket); `IfaceGuard` puts it down again on drop
//! if it was down. Its addresses are never touched.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Context, Error, Result};

/// `setsockopt(SOL_PACKET)`: the virtio-net header's size (Linux 6.2; not in libc yet).
const PACKET_VNET_HDR_SZ: i32 = 24;

/// Restores the interface's administrative state when the port goes.
pub struct IfaceGuard {
    name: String,
    was_up: bool,
}

impl IfaceGuard {
    /// Whether the interface was up before `open`.
    pub fn was_up(&self) -> bool {
        self.was_up
    }
}

impl Drop for IfaceGuard {
    fn drop(&mut self) {
        if !self.was_up {
            let _ = set_up(&self.name, false);
        }
    }
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(Error::invalid(format!("bad interface name {name:?}")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// Whether `name` is up; with `up`, make it so (or down) and say what it was.
fn set_up(name: &str, up: bool) -> Result<bool> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| format!("socket to configure interface {name}"))?;
    let mut req = ifreq(name)?;
    // SAFETY: req is a valid ifreq naming the interface; SIOCGIFFLAGS fills its flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::invalid(format!(
            "interface {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let was_up = flags & libc::IFF_UP as libc::c_short != 0;
    if was_up != up {
        let flags = if up {
            flags | libc::IFF_UP as libc::c_short
        } else {
            flags & !(libc::IFF_UP as libc::c_short)
        };
        req.ifr_ifru.ifru_flags = flags;
        // SAFETY: req names the interface and carries the new flags.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(Error::invalid(format!(
                "set interface {name} {}: {}",
                if up { "up" } else { "down" },
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(was_up)
}

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: value lives across the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking packet socket on `name` that reads and writes virtio-net-header frames, the
/// interface up and promiscuous; and the guard that restores it. `was_down`: it was down
/// before an earlier `open` (of a daemon since restarted), whatever it is now.
pub fn open(name: &str, was_down: bool) -> Result<(OwnedFd, IfaceGuard)> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|e| {
        Error::invalid(format!(
            "no interface {name} in the daemon's namespace: {e}"
        ))
    })?;
    // Up before the socket binds: a packet socket bound to a down interface reports ENETDOWN
    // on its first read, and the worker would stop polling it. The guard puts it back down if
    // a later step fails.
    let guard = IfaceGuard {
        name: name.to_string(),
        was_up: set_up(name, true)? && !was_down,
    };
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket call; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(Error::invalid(format!(
            "packet socket for {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let what =
        |e: std::io::Error, step: &str| Error::invalid(format!("interface {name}: {step}: {e}"));
    // The switch's frames carry the 12-byte header (with num_buffers) a TAP is given; a packet
    // socket's is 10 bytes unless told otherwise (PACKET_VNET_HDR_SZ, Linux 6.2).
    setsockopt_int(
        &fd,
        libc::SOL_PACKET,
        PACKET_VNET_HDR_SZ,
        crate::wire::VNET_HDR_LEN as i32,
    )
    .map_err(|e| what(e, "PACKET_VNET_HDR_SZ (Linux 6.2 or later)"))?;
    // Frames the host's own stack sends on the interface are not the switch's to forward.
    let _ = setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, opt, 4 << 20);
    }
    // SAFETY: sockaddr_ll is plain old data; all zeroes is valid before the fields are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(what(std::io::Error::last_os_error(), "bind"));
    }
    // SAFETY: packet_mreq is plain old data.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = index as i32;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: mreq is a valid packet_mreq of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(what(std::io::Error::last_os_error(), "promiscuous mode"));
    }
    Ok((fd, guard))
}
