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

use super::types::{Request, Response};
use crate::daemon;
use crate::error::{Context, Error, Result};
use crate::paths::StateDir;

const AUTOSTART_WAIT: Duration = Duration::from_secs(5);
/// How long a dying daemon may take to release its lock before a client gives up on it.
const DYING_WAIT: Duration = Duration::from_secs(3);

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
        !daemon::lock_is_free(&self.dirs)
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

    fn connect(&self) -> Result<UnixStream> {
        let socket = self.dirs.socket();
        let first = match UnixStream::connect(&socket) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(self.refused(e));
            }
            Err(e) => e,
        };
        // A daemon holds the lock but does not answer yet: it is starting, or dying.
        let deadline = Instant::now() + AUTOSTART_WAIT;
        while self.daemon_running() && Instant::now() < deadline {
            if let Ok(s) = UnixStream::connect(&socket) {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(10));
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
        let mut child = self.start_daemon()?;
        let deadline = Instant::now() + AUTOSTART_WAIT;
        loop {
            match UnixStream::connect(&socket) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(self.refused(e));
                }
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(self.daemon_failed(status));
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
        }
    }

    /// The error of an autostarted daemon that exited: its own last error line, from its log.
    fn daemon_failed(&self, status: std::process::ExitStatus) -> Error {
        let log = std::fs::read_to_string(self.dirs.log_file()).unwrap_or_default();
        match log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("tapnet: error: "))
        {
            // Another client started a daemon first: use that one.
            Some(line) if line.contains("already runs for state dir") => {
                Error::Remote(format!("{line} (retry)"))
            }
            Some(line) => Error::Remote(format!("the daemon could not start: {line}")),
            None => Error::Remote(format!(
                "the daemon exited at once ({status}); see {}",
                self.dirs.log_file().display()
            )),
        }
    }

    /// Start `tapnet daemon` for this state dir in the background, detached, logging to
    /// `<state-dir>/daemon.log`.
    fn start_daemon(&self) -> Result<Child> {
        daemon::prepare_state_dir(&self.dirs, None)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
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
        cmd.spawn().context(|| "start the daemon".into())
    }

    fn exchange(
        &self,
        request: &Request,
    ) -> std::result::Result<(serde_json::Value, BufReader<UnixStream>), Failure> {
        let mut stream = self.connect().map_err(Failure::Final)?;
        let mut line = serde_json::to_string(request)
            .map_err(|e| Failure::Final(Error::invalid(format!("encode request: {e}"))))?;
        line.push('\n');
        let sent = stream.write_all(line.as_bytes());
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        // A daemon that refuses a peer answers and closes at once, so the write may fail
        // (EPIPE) with its answer already waiting: read it before giving up.
        let read = reader.read_line(&mut answer);
        if answer.is_empty() {
            sent.context(|| "send request to the daemon".into())
                .map_err(Failure::Broken)?;
        }
        read.context(|| "read the daemon's answer".into())
            .map_err(Failure::Broken)?;
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

    /// Wait until the daemon that broke our connection has released its lock.
    fn wait_gone(&self) -> bool {
        let deadline = Instant::now() + DYING_WAIT;
        while Instant::now() < deadline {
            if !self.daemon_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Send a request whose answer is followed by a stream (a capture): the answer, and the
    /// connection positioned after it.
    pub fn open_stream(
        &self,
        request: &Request,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>)> {
        match self.exchange(request) {
            Ok(answer) => Ok(answer),
            Err(Failure::Final(e)) => Err(e),
            // The daemon died under the request (killed, or dying as we connected). Once it is
            // gone, start a new one and ask again: the state file shows whatever it committed.
            Err(Failure::Broken(e)) => {
                if !(self.autostart && self.wait_gone()) {
                    return Err(e);
                }
                self.exchange(request).map_err(|f| match f {
                    Failure::Broken(e) | Failure::Final(e) => e,
                })
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
