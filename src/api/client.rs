//! The client side of the control socket, with daemon autostart.
//!
//! Whether a daemon lives is decided by the state dir's lock, never by the socket alone: a
//! killed daemon's socket keeps accepting for some tens of milliseconds while the process dies,
//! and a daemon that starts has its lock before its socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::trust;
use super::types::{Request, Response};
use crate::control::request_log;
use crate::error::{Context, Error, Result};
use crate::paths::StateDir;
use crate::state_dir;

const AUTOSTART_WAIT: Duration = Duration::from_secs(5);
/// How long a request is tried again after the daemon died under it: the dying daemon's
/// teardown, then a new daemon's start.
const RETRY_WINDOW: Duration = Duration::from_secs(15);

pub struct Client {
    dirs: StateDir,
    autostart: bool,
}

/// Why a request got no answer.
enum Failure {
    /// The connection broke before an answer came: the daemon may have died under us.
    Broken(Error),
    /// Anything else, reported as it is.
    Final(Error),
}

impl Client {
    pub fn new(dirs: StateDir, autostart: bool) -> Self {
        Client { dirs, autostart }
    }

    pub fn dirs(&self) -> &StateDir {
        &self.dirs
    }

    /// Is a daemon alive for this state dir (it holds the lock)?
    pub fn daemon_running(&self) -> bool {
        !state_dir::lock_is_free(&self.dirs)
    }

    fn refused(&self, e: std::io::Error) -> Error {
        Error::Io {
            context: format!(
                "cannot use the daemon's socket {} (it belongs to another user, or the daemon \
                 was started with another --state-dir owner)",
                self.dirs.socket().display()
            ),
            source: e,
        }
    }

    /// Connect to the daemon, starting one if none runs. `dead`: the PID of a daemon that
    /// broke a connection of ours; a socket it still answers on is not used.
    fn connect(&self, dead: Option<i32>) -> Result<(UnixStream, i32)> {
        trust::check_owner(self.dirs.root(), "state dir")?;
        let socket = self.dirs.socket();
        let first = match self.try_connect(dead) {
            Ok(c) => return Ok(c),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::NotYet(e)) => e,
        };
        // A daemon holds the lock but does not answer yet: it is starting, or dying.
        let deadline = Instant::now() + AUTOSTART_WAIT;
        while self.daemon_running() && Instant::now() < deadline {
            match self.try_connect(dead) {
                Ok(c) => return Ok(c),
                Err(Attempt::Refused(e)) => return Err(e),
                Err(Attempt::NotYet(_)) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if !self.autostart {
            return Err(Error::Io {
                context: format!(
                    "no daemon answers on {} (autostart is off)",
                    socket.display()
                ),
                source: first,
            });
        }
        let (mut child, created) = self.start_daemon()?;
        let deadline = Instant::now() + AUTOSTART_WAIT;
        let mut exited = None;
        loop {
            let e = match self.try_connect(dead) {
                Ok(c) => {
                    // Another client's daemon answered: ours, still waiting for the state
                    // dir's lock, would take it over when that one stops.
                    if c.1 as u32 != child.id() && exited.is_none() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(child.id() as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    return Ok(c);
                }
                Err(Attempt::Refused(e)) => return Err(e),
                Err(Attempt::NotYet(e)) => e,
            };
            if exited.is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
            }
            // Our daemon exited. When another client's daemon won the state dir, wait for
            // that one to answer; otherwise ours failed, and its log says why.
            if let Some(status) = exited
                && !self.daemon_running()
            {
                let failure = self.daemon_failed(status);
                if created {
                    state_dir::remove_unused_state_dir(&self.dirs);
                }
                return Err(failure);
            }
            if Instant::now() > deadline {
                return Err(Error::Io {
                    context: format!(
                        "started a daemon but it did not answer on {} within 5 s (see {})",
                        socket.display(),
                        self.dirs.log_file().display()
                    ),
                    source: e,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One attempt to reach a daemon we can trust (see trust.rs); `dead` as for `connect`.
    fn try_connect(&self, dead: Option<i32>) -> std::result::Result<(UnixStream, i32), Attempt> {
        let socket = self.dirs.socket();
        let stream = match UnixStream::connect(&socket) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Attempt::Refused(self.refused(e)));
            }
            Err(e) => return Err(Attempt::NotYet(e)),
        };
        trust::check_owner(&socket, "control socket").map_err(Attempt::Refused)?;
        let pid = trust::check_peer(&stream, &socket).map_err(Attempt::Refused)?;
        if Some(pid) == dead {
            return Err(Attempt::NotYet(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("daemon {pid} is going away"),
            )));
        }
        Ok((stream, pid))
    }

    /// The error of an autostarted daemon that exited: its own last error line, from its log.
    fn daemon_failed(&self, status: std::process::ExitStatus) -> Error {
        let log = std::fs::read_to_string(self.dirs.log_file()).unwrap_or_default();
        match log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("tapnet: error: "))
        {
            Some(line) => Error::Remote(format!("the daemon could not start: {line}")),
            None => Error::Remote(format!(
                "the daemon exited at once ({status}); see {}",
                self.dirs.log_file().display()
            )),
        }
    }

    /// Start `tapnet daemon` for this state dir in the background, detached, logging to
    /// `<state-dir>/daemon.log`. Also says whether the state dir was made for it.
    fn start_daemon(&self) -> Result<(Child, bool)> {
        let created = state_dir::prepare_state_dir(&self.dirs, None)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dirs.log_file())
            .context(|| format!("open {}", self.dirs.log_file().display()))?;
        let log2 = log
            .try_clone()
            .context(|| format!("open {}", self.dirs.log_file().display()))?;
        let exe = std::env::current_exe().context(|| "find the tapnet executable".into())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--state-dir")
            .arg(self.dirs.root())
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session so that
        // it outlives this client and its terminal.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn();
        if child.is_err() && created {
            state_dir::remove_unused_state_dir(&self.dirs);
        }
        Ok((child.context(|| "start the daemon".into())?, created))
    }

    /// Send `line` and read the answer. `peer` is set to the daemon's PID once connected.
    fn exchange(
        &self,
        line: &str,
        dead: Option<i32>,
        peer: &mut Option<i32>,
    ) -> std::result::Result<(serde_json::Value, BufReader<UnixStream>), Failure> {
        let (mut stream, pid) = self.connect(dead).map_err(Failure::Final)?;
        *peer = Some(pid);
        // A daemon that refuses us answers at once and hangs up, perhaps before our request is
        // written: its answer is still there to read, so a failed write only counts if no
        // answer follows.
        let sent = stream
            .write_all(line.as_bytes())
            .context(|| "send request to the daemon".into());
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        let read = reader
            .read_line(&mut answer)
            .context(|| "read the daemon's answer".into());
        if answer.is_empty()
            && let Err(e) = sent
        {
            return Err(Failure::Broken(e));
        }
        read.map_err(Failure::Broken)?;
        if answer.is_empty() {
            return Err(Failure::Broken(Error::Remote(
                "the daemon closed the connection without answering".into(),
            )));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Ok { result }) => Ok((result, reader)),
            Ok(Response::Error { message }) => Err(Failure::Final(Error::Remote(message))),
            Err(e) => Err(Failure::Final(Error::Remote(format!(
                "unreadable answer from the daemon: {e}"
            )))),
        }
    }

    /// Send a request whose answer is followed by a stream (a capture): the answer, and the
    /// connection positioned after it.
    ///
    /// A daemon that dies under the request (killed, or dying as we connected) is waited out
    /// and the request sent again, to the daemon that replaces it (started by us or by
    /// another client). The request carries one id through every try, so that a daemon
    /// whose predecessor committed it before dying answers as the first try would have,
    /// instead of doing it twice.
    pub fn open_stream(
        &self,
        request: &Request,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>)> {
        let mut body = serde_json::to_value(request)
            .map_err(|e| Error::invalid(format!("encode request: {e}")))?;
        if let (Some(fields), Some(id)) = (body.as_object_mut(), request_log::new_id()) {
            fields.insert("request_id".into(), id.into());
        }
        let mut line = body.to_string();
        line.push('\n');
        let deadline = Instant::now() + RETRY_WINDOW;
        let mut dead = None;
        loop {
            let mut peer = None;
            match self.exchange(&line, dead, &mut peer) {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Broken(e)) => {
                    if !self.autostart || Instant::now() > deadline {
                        return Err(e);
                    }
                    dead = peer.or(dead);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Send one request and return the daemon's result.
    pub fn call_value(&self, request: &Request) -> Result<serde_json::Value> {
        self.open_stream(request).map(|(result, _)| result)
    }

    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let value = self.call_value(request)?;
        serde_json::from_value(value)
            .map_err(|e| Error::Remote(format!("unexpected answer from the daemon: {e}")))
    }
}

/// Why one connection attempt did not give a daemon to talk to.
enum Attempt {
    /// None answers yet (or only one that is going away): try again.
    NotYet(std::io::Error),
    /// One answers that we must not talk to, or may not: final.
    Refused(Error),
}
