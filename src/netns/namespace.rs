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
    /// A mount namespace pinned at this path, in which each (file, target) pair is bind
    /// mounted over the target (the sandbox's /etc/hosts, ...) and /sys shows the sandbox's
    /// own network devices.
    pub mnt: Option<(PathBuf, Vec<(PathBuf, PathBuf)>)>,
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
    if let Some((mnt, _)) = &spec.mnt {
        touch(mnt)?;
    }
    let netns = spec.netns.clone();
    let uts = spec.uts.clone();
    let binds = spec.mnt.as_ref().map(|(_, b)| b.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<i32>>();
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let outcome = (|| {
                let mut flags = CloneFlags::CLONE_NEWNET;
                if uts.is_some() {
                    flags |= CloneFlags::CLONE_NEWUTS;
                }
                unshare(flags).context(|| "create namespaces (unshare)".into())?;
                if let Some((path, hostname)) = &uts {
                    nix::unistd::sethostname(hostname)
                        .context(|| format!("set hostname {hostname}"))?;
                    bind_self_ns("uts", path)?;
                }
                setup()?;
                // Pin the network namespace while still in the daemon's mount namespace.
                bind_self_ns("net", &netns)?;
                if let Some(binds) = &binds {
                    private_mounts(binds)?;
                }
                Ok(nix::unistd::gettid().as_raw())
            })();
            let waits = outcome.is_ok() && binds.is_some();
            let _ = ready_tx.send(outcome);
            if waits {
                // Stay alive (and in the new mount namespace) until the daemon has pinned it.
                let _ = pinned_rx.recv();
            }
        })
        .context(|| "spawn namespace thread".into())?;
    let result = ready_rx
        .recv()
        .map_err(|_| Error::invalid("namespace thread died"))
        .and_then(|r| r)
        .and_then(|tid| match &spec.mnt {
            // A bind mount made inside the new mount namespace would be invisible outside it:
            // pin it from here, through the thread's /proc entry.
            Some((mnt, _)) => bind_ns_file(&format!("/proc/self/task/{tid}/ns/mnt"), mnt),
            None => Ok(()),
        });
    let _ = pinned_tx.send(());
    let _ = thread.join();
    if result.is_err() {
        remove(&spec.netns);
        if let Some((uts, _)) = &spec.uts {
            remove(uts);
        }
        if let Some((mnt, _)) = &spec.mnt {
            remove(mnt);
        }
    }
    result
}

/// In a fresh mount namespace of the calling thread: nothing propagates back to the host, the
/// sandbox's files cover the host's, and /sys is the sandbox's.
fn private_mounts(binds: &[(PathBuf, PathBuf)]) -> Result<()> {
    // A thread shares its filesystem context with the process; a mount namespace needs its own.
    unshare(CloneFlags::CLONE_FS).context(|| "unshare filesystem context".into())?;
    unshare(CloneFlags::CLONE_NEWNS).context(|| "create mount namespace".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context(|| "make mounts private".into())?;
    for (source, target) in binds {
        if !target.exists() {
            continue;
        }
        mount(
            Some(source.as_path()),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("bind {} over {}", source.display(), target.display()))?;
    }
    drop_foreign_namespace_mounts();
    // sysfs shows the network namespace of whoever mounts it: this thread is in the sandbox's.
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context(|| "mount /sys".into())
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

/// The new mount namespace starts as a copy of the daemon's, including the bind mounts that pin
/// other sandboxes' namespaces. Drop those copies, or they would keep those namespaces alive
/// after the other sandboxes are gone.
fn drop_foreign_namespace_mounts() {
    let Ok(info) = std::fs::read_to_string("/proc/thread-self/mountinfo") else {
        return;
    };
    for line in info.lines() {
        // Fields: ... mount-point ... " - " fstype source options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() == Some("nsfs")
            && let Some(point) = left.split(' ').nth(4)
        {
            let _ = umount2(point.replace("\\040", " ").as_str(), MntFlags::MNT_DETACH);
        }
    }
}

fn bind_self_ns(kind: &str, target: &Path) -> Result<()> {
    bind_ns_file(&format!("/proc/thread-self/ns/{kind}"), target)
}

fn bind_ns_file(source: &str, target: &Path) -> Result<()> {
    mount(
        Some(source),
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
