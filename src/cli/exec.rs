//! `tapnet exec` and the command half of `tapnet run`: run a program inside a sandbox's
//! namespaces with our stdio, and hand back its exit status.
//!
//! A forked child enters, in order: the rootless holder's user namespace and the mount
//! namespace that holds the pins (when it is not ours), the sandbox's network and UTS
//! namespaces, and then a mount namespace of its own in which the sandbox's /etc files cover
//! the host's, the other sandboxes' pins are gone and /sys is the sandbox's (as `ip netns exec`
//! builds it). Then it execs the program. Entering a user namespace needs a single-threaded
//! process: the CLI never starts threads, and the fork is one.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use crate::api::types::{InfoView, SandboxView};
use crate::control::etc_files;
use crate::error::{Context, Error, Result};
use crate::netns::namespace;
use crate::paths::StateDir;

/// Everything needed to enter a sandbox, gathered before forking.
pub struct Entry {
    sandbox: String,
    /// Rootless: the holder whose user namespace (and mount namespace) we join.
    holder: Option<i32>,
    /// The process whose mount namespace holds the pins, when it is not ours.
    pin_owner: Option<i32>,
    netns: PathBuf,
    utsns: Option<PathBuf>,
    etc: Option<PathBuf>,
    pin_dirs: Vec<PathBuf>,
}

fn same_ns(a: &str, b: &str) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Entry {
    pub fn new(view: &SandboxView, info: &InfoView, dirs: &StateDir) -> Entry {
        let pin_owner = info.holder_pid.unwrap_or(info.pid);
        let mnt_is_ours = same_ns("/proc/self/ns/mnt", &format!("/proc/{pin_owner}/ns/mnt"));
        Entry {
            sandbox: view.name.clone(),
            holder: info.holder_pid,
            pin_owner: (!mnt_is_ours).then_some(pin_owner),
            netns: PathBuf::from(&view.netns),
            utsns: view.utsns.as_ref().map(PathBuf::from),
            etc: view.etc.as_ref().map(PathBuf::from),
            pin_dirs: dirs.pin_dirs().to_vec(),
        }
    }

    /// A sandbox on the host's network has no namespaces of its own.
    fn shares_host(&self) -> bool {
        self.utsns.is_none()
    }

    /// Join the sandbox's namespaces and build its mount view, in the calling process.
    fn enter(&self) -> Result<()> {
        let name = &self.sandbox;
        if self.shares_host() {
            // Its namespace is the daemon's network namespace; a rootless daemon's is the
            // user's own, which is ours already.
            if self.holder.is_none() && !same_ns("/proc/self/ns/net", &path_str(&self.netns)) {
                let ns = open(&self.netns, name, "network namespace")?;
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .context(|| format!("enter the network namespace of sandbox {name}"))?;
            }
            return Ok(());
        }
        if let Some(holder) = self.holder {
            let user = open(
                Path::new(&format!("/proc/{holder}/ns/user")),
                name,
                "holder",
            )?;
            setns(user.as_fd(), CloneFlags::CLONE_NEWUSER).context(|| {
                format!("join the user namespace of the rootless daemon (holder {holder})")
            })?;
        }
        if let Some(owner) = self.pin_owner {
            let mnt = open(Path::new(&format!("/proc/{owner}/ns/mnt")), name, "daemon")?;
            setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
                .context(|| format!("join the mount namespace of the daemon ({owner})"))?;
        }
        let net = open(&self.netns, name, "network namespace")?;
        setns(net.as_fd(), CloneFlags::CLONE_NEWNET)
            .context(|| format!("enter the network namespace of sandbox {name}"))?;
        if let Some(uts) = &self.utsns {
            let uts = open(uts, name, "UTS namespace")?;
            setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)
                .context(|| format!("enter the UTS namespace of sandbox {name}"))?;
        }
        if let Some(etc) = &self.etc {
            self.mount_view(etc)?;
        }
        Ok(())
    }

    fn mount_view(&self, etc: &Path) -> Result<()> {
        let name = &self.sandbox;
        namespace::unshare_slave_mounts(&format!("a mount namespace for sandbox {name}"))?;
        // Our copy of the pins would keep other sandboxes' namespaces alive as long as this
        // command runs: drop them all (each pin directory is one mount).
        for dir in &self.pin_dirs {
            let _ = umount2(dir.as_path(), MntFlags::MNT_DETACH);
        }
        for (file, target) in etc_files::binds(etc) {
            if !target.exists() {
                continue;
            }
            mount(
                Some(file.as_path()),
                target.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context(|| format!("bind {} over {}", file.display(), target.display()))?;
        }
        // sysfs shows the network namespace of whoever mounts it: we are in the sandbox's.
        let sys = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
        // A rootless mount of sysfs can be refused where the host's /sys has mounts on top
        // of it; the sandbox then sees the host's devices in /sys (its `ip link` is right).
        if self.holder.is_none() {
            sys.context(|| "mount /sys".into())?;
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn open(path: &Path, sandbox: &str, what: &str) -> Result<File> {
    File::open(path).context(|| format!("open the {what} of sandbox {sandbox}: {}", path.display()))
}

/// Exit status like a shell reports it: the code, or 128 + the signal that killed it.
pub fn exec_in(entry: &Entry, command: &[String]) -> Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::invalid("no command given"))?;
    let cwd = std::env::current_dir().ok();
    // SAFETY: the CLI is single-threaded (it never spawns threads), so the child is a complete
    // copy of the process and may run ordinary code before it execs.
    match unsafe { fork() }.context(|| "fork".into())? {
        ForkResult::Child => {
            let code = run_child(entry, program, args, cwd);
            // SAFETY: leave the child without the parent's destructors (stdio buffers, ...).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::Sys {
                        context: format!("wait for {program} in sandbox {}", entry.sandbox),
                        errno: e,
                    });
                }
            }
        },
    }
}

/// In the forked child: enter, then exec. Returns only on failure, with the exit code.
fn run_child(entry: &Entry, program: &str, args: &[String], cwd: Option<PathBuf>) -> i32 {
    if let Err(e) = entry.enter() {
        eprintln!("tapnet: error: {e}");
        return 1;
    }
    // Entering a mount namespace moves us to its root: go back where the user was, if that
    // place exists in the sandbox's view.
    if let Some(dir) = cwd
        && std::env::set_current_dir(&dir).is_err()
    {
        let _ = std::env::set_current_dir("/");
    }
    let e = Command::new(program)
        .args(args.iter().map(OsString::from))
        .exec();
    eprintln!(
        "tapnet: error: cannot run {program} in sandbox {}: {e}",
        entry.sandbox
    );
    // As a shell does: 127 for a command that cannot be found, 126 for one not executable.
    match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}
