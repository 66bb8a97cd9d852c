//! What rootless mode needs from the host, checked up front so that a refusal names the setting
//! that would make it work; and the kernel features `tapnet info` reports.

use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const TUN: &str = "/dev/net/tun";

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// /dev/net/tun must exist and be readable and writable by the user.
pub fn tun_usable() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::OpenOptions::new().read(true).write(true).open(TUN) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "{TUN} does not exist: tapnet needs the tun driver (as root: modprobe tun, or \
             mkdir -p /dev/net && mknod -m 0666 {TUN} c 10 200)"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mode = std::fs::metadata(TUN)
                .map(|m| format!("{:04o}", m.permissions().mode() & 0o7777))
                .unwrap_or_else(|_| "unknown".into());
            Err(Error::invalid(format!(
                "{TUN} is mode {mode}: rootless tapnet needs it readable and writable by every \
                 user, mode 0666, as most distributions ship it (as root: chmod 0666 {TUN}, or \
                 a udev rule KERNEL==\"tun\", MODE=\"0666\")"
            )))
        }
        Err(e) => Err(Error::Io {
            context: format!("open {TUN}"),
            source: e,
        }),
    }
}

/// The error for a refused `unshare(CLONE_NEWUSER)`, naming the sysctl that refuses it.
pub fn userns_error(errno: nix::errno::Errno) -> Error {
    let mut why = Vec::new();
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push("kernel.unprivileged_userns_clone is 0 (set it to 1)");
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push("user.max_user_namespaces is 0 (set it to e.g. 28633)");
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        why.push("kernel.apparmor_restrict_unprivileged_userns is 1 (set it to 0)");
    }
    let why = if why.is_empty() {
        match errno {
            nix::errno::Errno::ENOSPC | nix::errno::Errno::EUSERS => {
                "the limit user.max_user_namespaces (of this or an enclosing user namespace) is \
                 reached"
                    .to_string()
            }
            _ => "unprivileged user namespaces are disabled (sysctl \
                  kernel.unprivileged_userns_clone=1 or user.max_user_namespaces > 0)"
                .to_string(),
        }
    } else {
        why.join("; ")
    };
    Error::Sys {
        context: format!("rootless tapnet cannot create a user namespace: {why}"),
        errno,
    }
}

/// Kernel features as `tapnet info` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Features {
    /// /dev/net/tun opens for reading and writing.
    pub tun: bool,
    /// TAPs take the virtio-net header (offloads, super-frames).
    pub vnet_hdr: bool,
    /// `user.max_user_namespaces` (0 disables user namespaces).
    pub max_user_namespaces: Option<u64>,
    /// `net.ipv4.ping_group_range` admits the daemon's group: ICMP echo NAT works.
    pub ping_sockets: bool,
    /// `net.ipv4.ip_unprivileged_port_start`: the lowest port a rootless daemon may publish.
    pub unprivileged_port_start: Option<u16>,
    /// TAPs may have several queues (`IFF_MULTI_QUEUE`): one per datapath thread.
    #[serde(default)]
    pub multi_queue_tap: bool,
    /// io_uring with what `--datapath-io uring` needs (provided-buffer rings).
    #[serde(default)]
    pub io_uring: bool,
    /// /dev/vhost-net exists (tapnet does not use it: see BENCHMARKS.md, issue 13).
    #[serde(default)]
    pub vhost_net: bool,
}

nix::ioctl_read_bad!(tungetfeatures, 0x8004_54cf, libc::c_uint);

pub fn features() -> Features {
    let tun = std::fs::OpenOptions::new().read(true).write(true).open(TUN);
    let tun_features = tun.as_ref().ok().and_then(|f| {
        let mut flags: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer.
        unsafe { tungetfeatures(f.as_raw_fd(), &mut flags) }
            .is_ok()
            .then_some(flags)
    });
    let has = |flag: libc::c_int| tun_features.is_some_and(|f| f & flag as libc::c_uint != 0);
    let gid = nix::unistd::getgid().as_raw();
    let ping_sockets = read_sysctl("/proc/sys/net/ipv4/ping_group_range")
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .is_some_and(|(lo, hi)| lo <= gid && gid <= hi);
    Features {
        tun: tun.is_ok(),
        vnet_hdr: has(libc::IFF_VNET_HDR),
        multi_queue_tap: has(libc::IFF_MULTI_QUEUE),
        io_uring: crate::datapath::uring::UringIo::probe().is_ok(),
        vhost_net: std::path::Path::new("/dev/vhost-net").exists(),
        max_user_namespaces: read_sysctl("/proc/sys/user/max_user_namespaces")
            .and_then(|v| v.parse().ok()),
        ping_sockets,
        unprivileged_port_start: read_sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .and_then(|v| v.parse().ok()),
    }
}
