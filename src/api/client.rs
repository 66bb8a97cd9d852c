//! The client side of the control socket, with daemon autostart.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::types::{Request, Response};
use crate::error::{Context, Error, Result};
use crate::paths::StateDir;

const AUTOSTART_WAIT: Duration = Duration::from_secs(5);

pub struct Client {
    dirs: StateDir,
    autostart: bool,
}

impl Client {
    pub fn new(dirs: StateDir, autostart: bool) -> Self {
        Client { dirs, autostart }
    }

    pub fn dirs(&self) -> &StateDir {
        &self.dirs
    }

    /// Is a daemon answering on this state dir's socket?
    pub fn daemon_running(&self) -> bool {
        UnixStream::connect(self.dirs.socket()).is_ok()
    }

    fn connect(&self) -> Result<UnixStream> {
        let socket = self.dirs.socket();
        match UnixStream::connect(&socket) {
            Ok(s) => return Ok(s),
            Err(e) if !self.autostart => {
                return Err(Error::Io {
                    context: format!(
                        "no daemon answers on {} (autostart is off)",
                        socket.display()
                    ),
                    source: e,
                });
            }
            Err(_) => {}
        }
        self.start_daemon()?;
        let deadline = Instant::now() + AUTOSTART_WAIT;
        loop {
            match UnixStream::connect(&socket) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > deadline => {
                    return Err(Error::Io {
                        context: format!(
                            "started a daemon but it did not answer on {} within 5 s (see {})",
                            socket.display(),
                            self.dirs.log_file().display()
                        ),
                        source: e,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Start `tapnet daemon` for this state dir in the background, detached, logging to
    /// `<state-dir>/daemon.log`.
    fn start_daemon(&self) -> Result<()> {
        std::fs::create_dir_all(self.dirs.root())
            .context(|| format!("create state dir {}", self.dirs.root().display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
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
        cmd.spawn().context(|| "start the daemon".into())?;
        Ok(())
    }

    /// Send a request whose answer is followed by a stream (a capture): the answer, and the
    /// connection positioned after it.
    pub fn open_stream(
        &self,
        request: &Request,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>)> {
        let mut stream = self.connect()?;
        let mut line = serde_json::to_string(request)
            .map_err(|e| Error::invalid(format!("encode request: {e}")))?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .context(|| "send request to the daemon".into())?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .context(|| "read the daemon's answer".into())?;
        if answer.is_empty() {
            return Err(Error::Remote(
                "the daemon closed the connection without answering".into(),
            ));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Ok { result }) => Ok((result, reader)),
            Ok(Response::Error { message }) => Err(Error::Remote(message)),
            Err(e) => Err(Error::Remote(format!(
                "unreadable answer from the daemon: {e}"
            ))),
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
