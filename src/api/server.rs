//! The daemon side of the control socket: who may connect, and the answer to one request line
//! (the event loop that reads the lines is poller.rs).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::types::{Request, Response};
use crate::datapath::capture::CaptureSession;
use crate::datapath::fdb::PortId;
use crate::error::Result;

/// Something that answers requests: the controller.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Result<serde_json::Value>;
    fn open_capture(
        &self,
        network: &str,
        sandbox: Option<&str>,
        snaplen: Option<u32>,
    ) -> Result<CaptureSession>;
    /// Labels of a network's ports by id (`trace --live` names them).
    fn port_labels(&self, network: &str) -> Result<HashMap<PortId, String>>;
}

/// Who may use the control socket: the daemon's own user, and members of `gid` when the
/// daemon was started with `--group`. Checked on every connection with SO_PEERCRED, on top of
/// the socket's mode, so that a loose state dir cannot open the daemon to everyone.
#[derive(Clone, Copy, Debug)]
pub struct PeerPolicy {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl PeerPolicy {
    /// Is the peer with these credentials allowed? `groups` lists its supplementary groups.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == self.uid || self.gid.is_some_and(|g| g == gid || groups.contains(&g))
    }
}

/// Supplementary groups of process `pid`, from /proc.
fn groups_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The credentials of the peer, or the reason it is refused.
pub(super) fn check_peer(conn: &UnixStream, policy: PeerPolicy) -> std::result::Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt};
    let cred = getsockopt(conn, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let groups = if policy.gid.is_some() {
        groups_of(cred.pid())
    } else {
        Vec::new()
    };
    if policy.allows(cred.uid(), cred.gid(), &groups) {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {} may not use this daemon (only uid {}{})",
            cred.uid(),
            policy.uid,
            policy
                .gid
                .map(|g| format!(" and group {g}"))
                .unwrap_or_default()
        ))
    }
}

/// Refuse a connection with one error line, and close it.
pub(super) fn refuse(mut conn: UnixStream, message: &str) {
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = reply(&mut conn, error(message));
}

/// A client that does not read its answer for this long is dropped: it holds a worker.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What becomes of a connection once its request is answered.
pub(super) enum After {
    /// Wait for its next request.
    Next(UnixStream),
    /// It is done (it hung up, or broke the protocol).
    Close,
    /// It streams a capture from now on, on a thread of its own.
    Stream(Box<dyn FnOnce() + Send>),
}

/// A complete request line and the connection to answer it on.
pub struct Job {
    pub conn: UnixStream,
    pub line: String,
}

/// The request id a client sent along with its request (see control::request_log).
#[derive(serde::Deserialize)]
struct Envelope {
    request_id: Option<String>,
}

/// Answer one request line. `streams_allowed`: whether another capture may start now.
pub(super) fn answer(job: Job, handler: &dyn Handler, streams_allowed: bool) -> After {
    let Job { mut conn, line } = job;
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let response = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(Request::Capture { .. } | Request::TraceLive { .. }) if !streams_allowed => {
            error("the daemon serves as many captures as it may at once; stop one and retry")
        }
        Ok(Request::Capture {
            network,
            sandbox,
            snaplen,
        }) => match handler.open_capture(&network, sandbox.as_deref(), snaplen) {
            Ok(session) => {
                crate::metrics::count_request("capture", true);
                let started = Response::Ok {
                    result: serde_json::json!({"snaplen": session.snaplen}),
                };
                if reply(&mut conn, started).is_err() {
                    return After::Close;
                }
                return After::Stream(Box::new(move || {
                    let _ = conn.set_write_timeout(None);
                    super::capture::stream(&session, conn)
                }));
            }
            Err(e) => error(&e.to_string()),
        },
        Ok(Request::TraceLive { network, sandbox }) => {
            let opened = handler.port_labels(&network).and_then(|labels| {
                handler
                    .open_capture(&network, sandbox.as_deref(), Some(LIVE_SNAPLEN))
                    .map(|s| (s, labels))
            });
            match opened {
                Ok((session, labels)) => {
                    crate::metrics::count_request("trace_live", true);
                    let started = Response::Ok {
                        result: serde_json::json!({"network": network}),
                    };
                    if reply(&mut conn, started).is_err() {
                        return After::Close;
                    }
                    return After::Stream(Box::new(move || {
                        let _ = conn.set_write_timeout(None);
                        super::live::stream(&session, &labels, conn)
                    }));
                }
                Err(e) => error(&e.to_string()),
            }
        }
        Ok(request) => {
            let id = serde_json::from_str::<Envelope>(line.trim_end())
                .ok()
                .and_then(|e| e.request_id)
                .filter(|id| crate::control::request_log::valid_id(id));
            let kind = request_kind(&request);
            let answer = crate::guard::guarded(&format!("api ({kind})"), || {
                crate::control::request_log::serving(id, || handler.handle(request))
            });
            let answer = answer.unwrap_or_else(|| {
                Err(crate::error::Error::Remote(format!(
                    "the daemon failed inside this {kind} request (a bug, logged in its \
                     daemon.log) and is restarting from its last saved state; retry"
                )))
            });
            crate::metrics::count_request(&kind, answer.is_ok());
            match answer {
                Ok(result) => Response::Ok { result },
                Err(e) => error(&e.to_string()),
            }
        }
        Err(e) => {
            crate::metrics::count_request("malformed", false);
            error(&format!("malformed request: {e}"))
        }
    };
    match reply(&mut conn, response) {
        Ok(()) => After::Next(conn),
        Err(_) => After::Close,
    }
}

/// The request's `op` (`network_create`, ...), for the metrics.
fn request_kind(request: &Request) -> String {
    serde_json::to_value(request)
        .ok()
        .and_then(|v| v.get("op")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Bytes of each frame `trace --live` looks at: headers up to the transport ports.
const LIVE_SNAPLEN: u32 = 128;

fn error(message: &str) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

fn reply(writer: &mut UnixStream, response: Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::PeerPolicy;

    #[test]
    fn only_the_owner_and_the_granted_group_get_in() {
        let own = PeerPolicy {
            uid: 1000,
            gid: None,
        };
        assert!(own.allows(1000, 1000, &[]));
        assert!(!own.allows(1001, 1000, &[1000]));
        assert!(
            !own.allows(0, 0, &[]),
            "not even root, unless it is the daemon's uid"
        );
        let group = PeerPolicy {
            uid: 0,
            gid: Some(27),
        };
        assert!(group.allows(0, 0, &[]));
        assert!(group.allows(1001, 27, &[]));
        assert!(group.allows(1001, 1001, &[4, 27]));
        assert!(!group.allows(1001, 1001, &[4, 24]));
    }
}
