//! The thread of a port that listens on a unix socket (`StreamPort`, `VhostUserPort`): its
//! socket bound and polled (`listen`), then the thread told to stop, woken and joined on drop,
//! and its socket file removed then, so that the path is free for the next port or daemon.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};

use crate::datapath::stream_port::bind;
use crate::error::{Context, Error, Result};

/// A port's socket, bound and registered on the poll its thread will wait on.
pub(crate) struct Listening {
    pub listener: UnixListener,
    pub poll: Poll,
    pub waker: Waker,
}

/// Make `switch_end` non-blocking (the port's thread reads it until it would block), bind
/// `path` (`replace_socket` as in `bind`) and poll it as `listener`, with a waker as `waker`.
/// The socket file is removed if a step after binding fails.
pub(crate) fn listen(
    name: &str,
    path: &Path,
    replace_socket: bool,
    switch_end: &OwnedFd,
    (listener_token, waker_token): (Token, Token),
) -> Result<Listening> {
    nix::fcntl::fcntl(
        switch_end,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context(|| format!("make the switch end of port {name} non-blocking"))?;
    let listener = bind(path, replace_socket)?;
    let set_up = || -> Result<(Poll, Waker)> {
        let poll = Poll::new().context(|| format!("create poll of port {name}"))?;
        let waker = Waker::new(poll.registry(), waker_token)
            .context(|| format!("create waker of port {name}"))?;
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                listener_token,
                Interest::READABLE,
            )
            .context(|| format!("poll {}", path.display()))?;
        Ok((poll, waker))
    };
    match set_up() {
        Ok((poll, waker)) => Ok(Listening {
            listener,
            poll,
            waker,
        }),
        Err(e) => Err(remove_socket(path, e)),
    }
}

/// Remove the socket at `path` after a failed setup; `e` passes through.
pub(crate) fn remove_socket(path: &Path, e: Error) -> Error {
    let _ = std::fs::remove_file(path);
    e
}

pub(crate) struct SocketThread {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl SocketThread {
    /// Run `body` on port `name`'s thread, called `thread_name`; it is to return once `stop` is
    /// set, which drop does before waking it with `waker`. The socket at `path` is removed if
    /// the thread cannot start, as on drop.
    pub(crate) fn spawn(
        name: &str,
        thread_name: String,
        path: &Path,
        stop: Arc<AtomicBool>,
        waker: Waker,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<SocketThread> {
        let started = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                crate::guard::guarded(&thread_name, body);
            })
            .context(|| format!("start the thread of port {name}"));
        let thread = started.map_err(|e| remove_socket(path, e))?;
        Ok(SocketThread {
            path: path.to_path_buf(),
            stop,
            waker,
            thread: Some(thread),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
