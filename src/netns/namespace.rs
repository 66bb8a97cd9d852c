//! Named namespaces as bind mounts (like `ip netns`), and running code inside one.
//!
//! Namespace work happens on a short-lived thread: `unshare` and `setns` of the network and UTS
//! namespaces affect only the calling thread, so the daemon's other threads stay where they are.
//! File descriptors opened there (TAPs, netlink sockets) stay valid after the thread ends.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

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

/// Which namespaces a new sandbox gets.
pub struct NewNamespaces {
    pub netns: PathBuf,
    /// A UTS namespace with this hostname, when the sandbox has its own.
    pub uts: Option<(PathBuf, String)>,
}

/// Create a network namespace (and optionally a UTS namespace) and pin them with bind mounts.
/// Runs `setup` inside the new network namespace before it is pinned (bring up `lo`, ...).
pub fn create(
    spec: NewNamespaces,
    setup: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    touch(&spec.netns)?;
    if let Some((uts, _)) = &spec.uts {
        touch(uts)?;
    }
    let netns = spec.netns.clone();
    let uts = spec.uts.clone();
    let result = on_thread(move || {
        let mut flags = CloneFlags::CLONE_NEWNET;
        if uts.is_some() {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        unshare(flags).context(|| "create namespaces (unshare)".into())?;
        if let Some((path, hostname)) = &uts {
            nix::unistd::sethostname(hostname).context(|| format!("set hostname {hostname}"))?;
            bind_self_ns("uts", path)?;
        }
        setup()?;
        bind_self_ns("net", &netns)
    });
    if result.is_err() {
        remove(&spec.netns);
        if let Some((uts, _)) = &spec.uts {
            remove(uts);
        }
    }
    result
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
    .context(|| format!("bind {kind} namespace to {}", target.display()))
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
