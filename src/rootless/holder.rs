//! The namespace holder of a rootless daemon: a small process that makes a user namespace (the
//! user mapped to root) and a mount namespace, and then only sleeps. The daemon joins both; so
//! does every `tapnet exec`. Because the holder outlives the daemon, the sandboxes' namespace
//! pins (bind mounts inside the holder's mount namespace) survive a `kill -9` of the daemon, and
//! a restarted daemon finds them again, as in root mode. `system reset` ends the holder.
//!
//! Everything here runs before the daemon starts any thread: `fork` is only sound in a
//! single-threaded process, and `setns` into a user namespace requires one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Pid, fork};

use super::idmap::Mapping;
use crate::error::{Context, Error, Result};
use crate::paths::StateDir;

/// The holder's command name, as /proc/PID/comm shows it.
pub const HOLDER_COMM: &str = "tapnet-nsholder";

/// The holder recorded for `dirs`, if it is alive and is what it claims: our user's process,
/// named as a holder, with its namespaces.
pub fn find(dirs: &StateDir) -> Option<i32> {
    let text = std::fs::read_to_string(dirs.holder_pid_file()).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    is_holder(pid).then_some(pid)
}

pub fn is_holder(pid: i32) -> bool {
    let proc = format!("/proc/{pid}");
    let comm = std::fs::read_to_string(format!("{proc}/comm")).unwrap_or_default();
    if comm.trim() != HOLDER_COMM {
        return false;
    }
    // Zombies keep their comm but have no namespaces left. (The holder's user namespace may
    // be ours too: the demo joins it, and then stops it.)
    if std::fs::read_link(format!("{proc}/ns/user")).is_err() {
        return false;
    }
    let uid = nix::unistd::getuid().as_raw().to_string();
    std::fs::read_to_string(format!("{proc}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some(uid.as_str()))
        })
        .unwrap_or(false)
}

/// Join the user and mount namespaces of `pid`. The caller must be single-threaded.
pub fn join(pid: i32) -> Result<()> {
    let open = |kind: &str| {
        let path = format!("/proc/{pid}/ns/{kind}");
        File::open(&path).context(|| format!("open {path}"))
    };
    let user = open("user")?;
    let mnt = open("mnt")?;
    setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
        .context(|| format!("join the user namespace of holder {pid}"))?;
    setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
        .context(|| format!("join the mount namespace of holder {pid}"))?;
    Ok(())
}

/// Start a holder for `dirs` and record its PID. The caller must be single-threaded.
pub fn spawn(dirs: &StateDir, mapping: Mapping) -> Result<i32> {
    let (from_child, to_parent) = pipe()?;
    let (from_parent, to_child) = pipe()?;
    // SAFETY: the daemon has started no thread yet (see the module comment), so the child is a
    // complete copy of a single-threaded process and may run ordinary code.
    match unsafe { fork() }.context(|| "fork the namespace holder".into())? {
        ForkResult::Child => {
            drop(from_child);
            drop(to_child);
            let code = match become_holder(File::from(to_parent), File::from(from_parent)) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(to_parent);
            drop(from_parent);
            let mut from_child = File::from(from_child);
            let mut to_child = File::from(to_child);
            let outcome = (|| {
                expect(&mut from_child, b'U')?;
                mapping.apply(child.as_raw())?;
                to_child
                    .write_all(b"M")
                    .context(|| "signal the namespace holder".into())?;
                expect(&mut from_child, b'R')
            })();
            if let Err(e) = outcome {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
            std::fs::write(dirs.holder_pid_file(), format!("{child}\n"))
                .context(|| format!("write {}", dirs.holder_pid_file().display()))?;
            Ok(child.as_raw())
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "create a pipe".into())
}

/// Read the child's next step: the byte `want`, or `E` and an error text.
fn expect(from_child: &mut File, want: u8) -> Result<()> {
    let mut message = Vec::new();
    let mut byte = [0u8; 1];
    match from_child.read(&mut byte) {
        Ok(1) if byte[0] == want => return Ok(()),
        Ok(1) if byte[0] == b'E' => {
            let _ = from_child.read_to_end(&mut message);
        }
        _ => message.extend_from_slice(b"the namespace holder exited during setup"),
    }
    Err(Error::invalid(
        String::from_utf8_lossy(&message).into_owned(),
    ))
}

/// The child's side: new user namespace, wait to be mapped, new mount namespace, then sleep.
fn become_holder(mut to_parent: File, mut from_parent: File) -> Result<()> {
    let step = |to_parent: &mut File, r: Result<()>| -> Result<()> {
        if let Err(e) = &r {
            let _ = to_parent.write_all(format!("E{e}").as_bytes());
        }
        r
    };
    let _ = nix::unistd::setsid();
    step(
        &mut to_parent,
        unshare(CloneFlags::CLONE_NEWUSER).map_err(super::checks::userns_error),
    )?;
    let _ = to_parent.write_all(b"U");
    let mut byte = [0u8; 1];
    if from_parent.read(&mut byte).ok() != Some(1) || byte[0] != b'M' {
        return Err(Error::invalid("not mapped"));
    }
    let setup = (|| {
        let root = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root, root, root).context(|| "become group root".into())?;
        let root = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresuid(root, root, root).context(|| "become root".into())?;
        // Slave: unmounts on the host reach us; our pins never reach the host.
        crate::netns::namespace::unshare_slave_mounts("the holder's mount namespace")
    })();
    step(&mut to_parent, setup)?;
    set_comm(HOLDER_COMM);
    let _ = to_parent.write_all(b"R");
    drop(to_parent);
    drop(from_parent);
    detach_from_everything(3);
    loop {
        nix::unistd::pause();
    }
}

pub(crate) fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from buf.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Close every inherited descriptor from `first` up (the daemon's state-dir lock among them: a
/// process that outlives the daemon must not keep it), point stdio at /dev/null, ignore the
/// signals of a terminal, and leave the daemon's working directory. For the holder and the fd
/// keeper, right after their fork.
pub(crate) fn detach_from_everything(first: u32) {
    // SAFETY: plain syscalls on descriptor numbers; nothing in this process uses them again.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let _ = std::env::set_current_dir("/");
}

/// Stop the holder of `dirs` (its namespaces, and every sandbox pinned in them, go with it).
pub fn stop(dirs: &StateDir) {
    if let Some(pid) = find(dirs) {
        let pid = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..100 {
            if !is_holder(pid.as_raw()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(dirs.holder_pid_file());
}
