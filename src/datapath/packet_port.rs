//! An existing interface of the daemon's namespace as a switch port (`tapnet port add --iface`):
//! a VMM's TAP, a veth end, a NIC. An AF_PACKET socket with a virtio-net header reads and writes
//! its frames, so super-frames pass whole (the kernel segments what the device cannot take) and
//! partial checksums stay partial, as on a TAP queue; the socket's fd is the port's fd, polled
//! by the workers like a TAP queue's, and no thread of its own is needed.
//!
//! By default the socket has mmap'd TPACKET_V2 RX and TX rings (`packet_ring.rs`): the worker
//! that polls the port copies frames out of RX slots with no system call per frame, and frames
//! for the interface are copied into TX slots and sent with one `send` per poll round instead
//! of one `write` each. Why V2 and not V3, and how frames too big for a slot pass: see
//! `packet_ring.rs`. If the kernel refuses a ring (an option or the mapping fails), the port
//! reads and writes the socket plainly, one system call per frame, as it did before the rings;
//! `TAPNET_IFACE_RING=0` in the daemon's environment asks for that (to compare the two:
//! `scripts/bench-iface.sh`, figures in BENCHMARKS.md). The io_uring workers
//! (`--datapath-io uring`) read and write fds, so their ports are always plain. `port ls`
//! says which (`io`).
//!
//! The interface is set up and promiscuous (a packet-socket membership, gone with the socket);
//! `IfaceGuard` puts it down again on drop if it was down. Its addresses are never touched.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::packet_ring::PacketRing;
use crate::error::{Context, Error, Result};

/// `setsockopt(SOL_PACKET)`: the virtio-net header's size (Linux 6.2; not in libc yet).
pub(crate) const PACKET_VNET_HDR_SZ: i32 = 24;

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

/// `setsockopt` of a plain value (an int, a ring request), shared with `packet_ring.rs`.
pub(crate) fn setsockopt<T>(fd: RawFd, level: i32, opt: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: value is valid for reads of its size across the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How an `--iface` port moves frames (`port ls` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// mmap'd TPACKET_V2 RX and TX rings (`packet_ring.rs`).
    Ring,
    /// One `read` or `write` per frame.
    Plain,
}

impl Io {
    pub fn name(self) -> &'static str {
        match self {
            Io::Ring => "ring",
            Io::Plain => "plain",
        }
    }
}

/// Whether `--iface` ports use rings: yes unless `TAPNET_IFACE_RING=0` (to compare the two).
pub fn rings_wanted() -> bool {
    std::env::var_os("TAPNET_IFACE_RING").is_none_or(|v| v != "0")
}

/// An opened `--iface` port: its packet socket (the fd the workers poll), the socket's rings
/// (`None`: plain reads and writes) and the guard that restores the interface.
pub struct Opened {
    pub fd: OwnedFd,
    pub ring: Option<PacketRing>,
    pub guard: IfaceGuard,
}

fn packet_socket(name: &str, proto: u16) -> Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A non-blocking packet socket on `name` that reads and writes virtio-net-header frames, the
/// interface up and promiscuous; and the guard that restores it. `was_down`: it was down
/// before an earlier `open` (of a daemon since restarted), whatever it is now. With `ring`,
/// the socket gets RX and TX rings if the kernel allows (else plain reads and writes, said on
/// stderr).
pub fn open(name: &str, was_down: bool, ring: bool) -> Result<Opened> {
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
    let mut fd = packet_socket(name, proto)?;
    let ring = if ring {
        match PacketRing::setup(&fd, name, index) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("tapnet: {e}; port on {name} reads and writes without rings");
                // Options set before the failure stay on a socket: start over.
                fd = packet_socket(name, proto)?;
                None
            }
        }
    } else {
        None
    };
    let what =
        |e: std::io::Error, step: &str| Error::invalid(format!("interface {name}: {step}: {e}"));
    // The switch's frames carry the 12-byte header (with num_buffers) a TAP is given; a packet
    // socket's is 10 bytes unless told otherwise (PACKET_VNET_HDR_SZ, Linux 6.2). The rings
    // keep 10 (see packet_ring.rs).
    if ring.is_none() {
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR_SZ,
            &(crate::wire::VNET_HDR_LEN as i32),
        )
        .map_err(|e| what(e, "PACKET_VNET_HDR_SZ (Linux 6.2 or later)"))?;
    }
    // Frames the host's own stack sends on the interface are not the switch's to forward.
    let _ = setsockopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &1i32,
    );
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let _ = setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, &(4i32 << 20));
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
    Ok(Opened { fd, ring, guard })
}
