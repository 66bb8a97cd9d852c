//! The keeper process: forked by the daemon before it starts any thread (`fork` is only sound in
//! a single-threaded process), it outlives the daemon and only answers the daemon's messages on
//! its socket. Single-threaded, one poll loop, no allocation per message beyond the kept fds'
//! map.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, getsockopt, listen,
    socket, sockopt,
};
use nix::unistd::{ForkResult, fork};

use super::KEEPER_COMM;
use super::proto::{self, MAX_MESSAGE, Request};
use crate::error::{Context, Result};
use crate::paths::StateDir;

/// A unix SOCK_SEQPACKET socket, close-on-exec.
pub(super) fn seqpacket() -> Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| "create a unix socket for the fd keeper".into())
}

/// Start a keeper for `dirs`, listening on its socket (mode 0600), and record its PID. The
/// caller must be single-threaded. The keeper listens a moment later: connect with retries.
pub fn spawn(dirs: &StateDir) -> Result<i32> {
    let path = dirs.keeper_socket();
    let _ = std::fs::remove_file(&path);
    let listener = seqpacket()?;
    let addr = UnixAddr::new(&path).context(|| format!("address {}", path.display()))?;
    bind(listener.as_raw_fd(), &addr).context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("restrict {}", path.display()))?;
    // SAFETY: the daemon has started no thread yet (see the module comment), so the child is a
    // complete copy of a single-threaded process and may run ordinary code.
    match unsafe { fork() }.context(|| "fork the fd keeper".into())? {
        ForkResult::Child => {
            let listener = detach(listener);
            // Listening here, not in the parent: a client's SO_PEERCRED are those of the
            // process that called listen(), and the daemon checks that it is the keeper.
            if listen(&listener, Backlog::new(16).unwrap_or(Backlog::MAXCONN)).is_ok() {
                serve(listener);
            }
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            std::fs::write(dirs.keeper_pid_file(), format!("{child}\n"))
                .context(|| format!("write {}", dirs.keeper_pid_file().display()))?;
            Ok(child.as_raw())
        }
    }
}

/// The child's setup: its own session, its name, the listener as fd 3 and every other inherited
/// descriptor closed (the daemon's state-dir lock among them), stdio on /dev/null, the signals
/// of a terminal ignored.
fn detach(listener: OwnedFd) -> OwnedFd {
    let _ = nix::unistd::setsid();
    crate::rootless::holder::set_comm(KEEPER_COMM);
    // SAFETY: plain syscalls on descriptor numbers; the listener is moved to fd 3 and owned
    // again below (the original closed with the rest).
    unsafe {
        let raw = std::os::fd::IntoRawFd::into_raw_fd(listener);
        if raw != 3 {
            libc::dup2(raw, 3);
        }
    }
    crate::rootless::holder::detach_from_everything(4);
    // SAFETY: setting a signal's disposition to ignore.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // SAFETY: fd 3 is the listener, dup'd there above (the original closed by close_range).
    unsafe { OwnedFd::from_raw_fd(3) }
}

/// May this connection talk to the keeper? Only a process of the keeper's own user.
fn same_user(conn: &OwnedFd) -> bool {
    getsockopt(conn, sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

/// Serve until a `Q`: accept connections, keep and hand out fds.
fn serve(listener: OwnedFd) {
    let mut kept: HashMap<String, Vec<OwnedFd>> = HashMap::new();
    let mut conns: Vec<OwnedFd> = Vec::new();
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        let mut polls: Vec<libc::pollfd> = std::iter::once(&listener)
            .chain(conns.iter())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polls is a live array of pollfd of the length given.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        if polls[0].revents != 0
            && let Ok(conn) = accept4(listener.as_fd(), SockFlag::SOCK_CLOEXEC)
            && same_user(&conn)
        {
            // A daemon that stops reading never blocks the keeper for long.
            let timeout = nix::sys::time::TimeVal::new(5, 0);
            let _ = nix::sys::socket::setsockopt(&conn, sockopt::SendTimeout, &timeout);
            conns.push(conn);
        }
        let mut closed = Vec::new();
        for (i, p) in polls.iter().enumerate().skip(1) {
            if p.revents == 0 {
                continue;
            }
            let conn = &conns[i - 1];
            match serve_one(conn, &mut buf, &mut kept) {
                Step::Go => {}
                Step::Close => closed.push(i - 1),
                Step::Quit => {
                    drop(listener);
                    kept.clear();
                    let _ = proto::send(conn.as_fd(), b"O", &[]);
                    return;
                }
            }
        }
        for i in closed.into_iter().rev() {
            conns.swap_remove(i);
        }
    }
}

enum Step {
    Go,
    Close,
    Quit,
}

fn serve_one(
    conn: &OwnedFd,
    buf: &mut [u8; MAX_MESSAGE],
    kept: &mut HashMap<String, Vec<OwnedFd>>,
) -> Step {
    let (len, fds) = match proto::recv(conn.as_fd(), buf) {
        Ok(Some(m)) => m,
        Ok(None) => return Step::Close,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let _ = proto::send(conn.as_fd(), b"Fmessage cut short", &[]);
            return Step::Go;
        }
        Err(_) => return Step::Close,
    };
    let reply = match proto::parse_request(&buf[..len], fds.len()) {
        Some(Request::Put(key)) => {
            // Replacing closes the old references (the same files when the daemon puts the
            // fds it took back: no TAP goes).
            kept.insert(key.to_string(), fds);
            Ok(())
        }
        Some(Request::Drop(key)) => {
            kept.remove(key);
            Ok(())
        }
        Some(Request::Clear) => {
            kept.clear();
            Ok(())
        }
        Some(Request::Quit) => return Step::Quit,
        Some(Request::TakeAll) => {
            for (key, fds) in kept.iter() {
                let (msg, n) = proto::message(b'K', key);
                let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                if proto::send(conn.as_fd(), &msg[..n], &raw).is_err() {
                    return Step::Close;
                }
            }
            match proto::send(conn.as_fd(), b"E", &[]) {
                Ok(()) => return Step::Go,
                Err(_) => return Step::Close,
            }
        }
        None => Err("bad request"),
    };
    let sent = match reply {
        Ok(()) => proto::send(conn.as_fd(), b"O", &[]),
        Err(text) => {
            let (msg, n) = proto::message(b'F', text);
            proto::send(conn.as_fd(), &msg[..n], &[])
        }
    };
    if sent.is_err() { Step::Close } else { Step::Go }
}
