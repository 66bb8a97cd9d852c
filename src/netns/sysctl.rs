//! Per-namespace IPv6 settings of a sandbox's interfaces, through the sysctl files of procfs. A
//! thread that has joined a network namespace sees that namespace's entries there.
//!
//! Why not plain `/proc/sys`: every network namespace that ever walked `/proc/sys/net` leaves a
//! dentry named `net` under the one `/proc/sys` directory, all in one hash chain, and the
//! kernel compares a new namespace's first lookup against each (`proc_sys_compare`, with a
//! lock per entry): with 4,300 sandboxes that was 30 % of the daemon's CPU per create. A
//! procfs instance of our own (`fsopen`, never attached to any mount tree, closed after use)
//! has a directory tree, and so dentries, of its own: its lookups cost the same at any count.
//! Where we may not make one (a user namespace without a PID namespace of its own, a masked
//! procfs), `/proc/sys` serves as before.

use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// What tapnet sets on every sandbox interface (`net/ipv6/conf/IF/...`).
pub struct Ipv6Conf {
    /// Accept Router Advertisements: 0, since tapnet configures addresses and routes itself
    /// and no neighbour may hand a sandbox others.
    pub accept_ra: u8,
    /// 0: the link-local address derives from the MAC (EUI-64), as port security expects.
    pub addr_gen_mode: u8,
}

/// The settings of every tapnet interface.
pub const SANDBOX_IPV6: Ipv6Conf = Ipv6Conf {
    accept_ra: 0,
    addr_gen_mode: 0,
};

/// `net/ipv6/conf` of the calling thread's network namespace, opened once for several writes.
/// `None` inside: a kernel without IPv6 (nothing to set).
pub struct ConfDir {
    dir: Option<OwnedFd>,
    /// Shown in errors: where the directory was found.
    origin: &'static str,
}

impl ConfDir {
    /// Open it in a private procfs instance, or in `/proc/sys` where that cannot be made.
    pub fn open() -> Result<Self> {
        const DIR: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY);
        if let Some(root) = private_procfs() {
            // The directory's fd keeps the detached mount alive; the mount's own fd can go.
            match open_path(&root, "sys/net/ipv6/conf", DIR) {
                Ok(dir) => return Ok(Self::found(Some(dir), "a private procfs")),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Ok(Self::found(None, "a private procfs"));
                }
                // Refused there (a masked procfs): /proc/sys may still be writable.
                Err(_) => {}
            }
        }
        match open_path(AT_FDCWD, "/proc/sys/net/ipv6/conf", DIR) {
            Ok(dir) => Ok(Self::found(Some(dir), "/proc/sys")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::found(None, "/proc/sys")),
            Err(source) => Err(Error::Io {
                context: "open /proc/sys/net/ipv6/conf in a sandbox".into(),
                source,
            }),
        }
    }

    fn found(dir: Option<OwnedFd>, origin: &'static str) -> Self {
        Self { dir, origin }
    }

    /// Apply `conf` to `interface`. A kernel without IPv6 has none of the files: with
    /// `required` false that is no error (an IPv4-only network).
    pub fn set_ipv6_conf(&self, interface: &str, conf: &Ipv6Conf, required: bool) -> Result<()> {
        self.write(interface, "accept_ra", conf.accept_ra, required)?;
        self.write(interface, "addr_gen_mode", conf.addr_gen_mode, required)
    }

    /// Turn IPv6 off on `interface` (an endpoint of a network without IPv6), as Docker does:
    /// no link-local address, so none of the DAD, MLD and Router Solicitation frames each new
    /// interface multicasts, which the switch would copy to every port of the network. A
    /// kernel without IPv6 has nothing to turn off.
    pub fn disable_ipv6(&self, interface: &str) -> Result<()> {
        self.write(interface, "disable_ipv6", 1, false)
    }

    /// Set `accept_ra` on `all` and `default` of a new sandbox namespace, so that no interface
    /// made in it (by tapnet or by a process inside) takes addresses from a neighbour's RAs.
    pub fn set_namespace_accept_ra(&self, conf: &Ipv6Conf) -> Result<()> {
        self.write("all", "accept_ra", conf.accept_ra, false)?;
        self.write("default", "accept_ra", conf.accept_ra, false)
    }

    fn write(&self, dev: &str, key: &str, value: u8, required: bool) -> Result<()> {
        let what = || format!("set net.ipv6.conf.{dev}.{key} to {value} in a sandbox");
        let Some(dir) = &self.dir else {
            return match required {
                true => Err(Error::invalid(format!(
                    "{}: the kernel has no IPv6",
                    what()
                ))),
                false => Ok(()),
            };
        };
        let written = open_path(dir, &format!("{dev}/{key}"), OFlag::O_WRONLY).and_then(|fd| {
            std::io::Write::write_all(&mut std::fs::File::from(fd), value.to_string().as_bytes())
        });
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && !required => Ok(()),
            Err(source) => Err(Error::Io {
                context: format!("{} (through {})", what(), self.origin),
                source,
            }),
        }
    }
}

/// The root of a new procfs instance, as a detached mount (`fsopen` + `fsmount`): `None` where
/// the kernel or our privileges do not allow one.
fn private_procfs() -> Option<OwnedFd> {
    let name = c"proc";
    // SAFETY: fsopen reads a NUL-terminated string; the result is a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) };
    let fs = owned(fs)?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let made = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if made < 0 {
        return None;
    }
    let attrs = libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: fsmount takes the configured context's fd, flags and mount attributes, and
    // returns a new fd or -1.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    };
    owned(mnt)
}

fn owned(ret: libc::c_long) -> Option<OwnedFd> {
    let fd = i32::try_from(ret).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall returned a new fd, which nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_path(dir: impl AsFd, path: &str, flags: OFlag) -> std::io::Result<OwnedFd> {
    Ok(openat(dir, path, flags | OFlag::O_CLOEXEC, Mode::empty())?)
}
