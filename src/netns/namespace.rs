//! Named namespaces as bind mounts (like `ip netns`), and running code inside one.
//!
//! Namespace work happens on a short-lived thread: `unshare` and `setns` of the network and UTS
//! namespaces affect only the calling thread, so the daemon's other threads stay where they are.
//! File descriptors opened there (TAPs, netlink sockets) stay valid after the thread ends.
//!
//! Only network and UTS namespaces are pinned. A sandbox's mount view (its /etc files, its
//! /sys) is built for each `tapnet exec` instead (see `cli::sandbox_view`), as `ip netns exec`
//! does: pinning a mount namespace with a bind mount fails at random inside a non-initial mount
//! namespace on Linux 6.18, whose namespace ids are not ordered across CPUs.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Context, Error, Result};

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Run `f` on a fresh thread that has joined the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(netns).context(|| format!("open namespace {}", netns.display()))?;
    let path = netns.to_path_buf();
    on_thread(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .context(|| format!("enter namespace {}", path.display()))?;
        f()
    })
}

fn on_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(f)
        .context(|| "spawn namespace thread".into())?
        .join()
        .map_err(|_| Error::invalid("namespace thread panicked"))?
}

/// Is `path` a mounted namespace file (and not just the empty file it is mounted on)?
pub fn is_mounted_ns(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(fs) => fs.filesystem_type().0 == NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Make `dir` a mount point of its own (a bind mount of itself), once. Pins live below it, so
/// that a copy of the mount table (a `tapnet exec`'s mount namespace) can drop all of them with
/// one detach instead of keeping every other sandbox's namespaces alive.
pub fn ensure_pin_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    if is_mount_point(dir) {
        return Ok(());
    }
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .context(|| format!("bind {} to itself", dir.display()))
}

/// Is `dir` the root of a mount (its device differs from its parent's, or mountinfo lists it)?
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        return false;
    };
    let Ok(canonical) = dir.canonicalize() else {
        return false;
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(&unescape_mountinfo(point)) == canonical)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
pub fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Give the calling thread a mount namespace of its own whose mounts are slaves of the one it
/// leaves: unmounts there still reach it, and nothing mounted in it ever reaches back.
pub fn unshare_slave_mounts(what: &str) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context(|| format!("create {what}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context(|| format!("make the mounts of {what} slaves"))
}

/// Create a network namespace (and, with `uts`, a UTS namespace with that hostname) and pin
/// them with bind mounts. Runs `setup` inside the new network namespace before it is pinned
/// (bring up `lo`, ...). On failure nothing is left behind.
pub fn create(
    netns: &Path,
    uts: Option<(&Path, &str)>,
    setup: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    super::slow_for_test();
    touch(netns)?;
    if let Some((path, _)) = uts
        && let Err(e) = touch(path)
    {
        remove(netns);
        return Err(e);
    }
    let net_target = netns.to_path_buf();
    let uts_target = uts.map(|(p, h)| (p.to_path_buf(), h.to_string()));
    let result = on_thread(move || {
        let mut flags = CloneFlags::CLONE_NEWNET;
        if uts_target.is_some() {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        unshare(flags).map_err(|errno| unshare_error(errno, flags))?;
        if let Some((path, hostname)) = &uts_target {
            nix::unistd::sethostname(hostname).context(|| format!("set hostname {hostname}"))?;
            bind_self_ns("uts", path)?;
        }
        setup()?;
        bind_self_ns("net", &net_target)
    });
    if result.is_err() {
        remove(netns);
        if let Some((path, _)) = uts {
            remove(path);
        }
    }
    result
}

/// The error for a refused `unshare`, with what would make it work.
fn unshare_error(errno: nix::errno::Errno, flags: CloneFlags) -> Error {
    let what = if flags.contains(CloneFlags::CLONE_NEWUTS) {
        "network and UTS"
    } else {
        "network"
    };
    let hint = if errno == nix::errno::Errno::EPERM {
        ": the daemon lacks CAP_SYS_ADMIN (run it as root, or as a user with unprivileged user \
         namespaces so that it makes its own; see `tapnet info`)"
    } else {
        ""
    };
    Error::Sys {
        context: format!("create {what} namespaces (unshare){hint}"),
        errno,
    }
}

/// Pin the calling thread's current network namespace at `path` (for host-network sandboxes,
/// whose "namespace" is the daemon's own).
pub fn pin_current_netns(path: &Path) -> Result<()> {
    touch(path)?;
    let target = path.to_path_buf();
    let result = on_thread(move || bind_self_ns("net", &target));
    if result.is_err() {
        remove(path);
    }
    result
}

fn touch(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    }
    File::create(path).context(|| format!("create {}", path.display()))?;
    Ok(())
}

fn bind_self_ns(kind: &str, target: &Path) -> Result<()> {
    let source = format!("/proc/thread-self/ns/{kind}");
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context(|| format!("bind {source} to {}", target.display()))
}

/// Unpin and delete a namespace file. The namespace itself goes when nothing else holds it.
pub fn remove(path: &Path) {
    // Several mounts may be stacked if a crash interrupted setup: unmount until none is left.
    for _ in 0..8 {
        if umount2(path, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }
}
