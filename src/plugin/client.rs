//! tapnet as the client of a network plugin (the `remote:NAME` driver): find the plugin as
//! Docker does, check its handshake, and make calls that either return the plugin's answer or
//! one error line naming the plugin and the call. Every call has a deadline.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http;
use super::protocol::{self as p, decode, error_of};
use crate::error::{Error, Result};

/// How long a plugin may take over one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where plugins are looked for, in order, besides `<state-dir>/plugins`.
pub const SYSTEM_DIRS: &[&str] = &[
    "/run/docker/plugins",
    "/etc/docker/plugins",
    "/usr/lib/docker/plugins",
];

/// The socket of plugin `name`: `NAME.sock` in one of `dirs`, or the `unix://` address a
/// `NAME.spec` (one line) or `NAME.json` (`{"Addr": ...}`) there names.
pub fn discover(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    crate::control::model::validate_name("plugin", name).map_err(Error::Invalid)?;
    for dir in dirs {
        let sock = dir.join(format!("{name}.sock"));
        if sock.exists() {
            return Ok(sock);
        }
        for ext in ["spec", "json"] {
            let file = dir.join(format!("{name}.{ext}"));
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let addr = if ext == "json" {
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["Addr"].as_str().map(str::to_string))
                    .ok_or_else(|| {
                        Error::invalid(format!("{}: no \"Addr\" string", file.display()))
                    })?
            } else {
                text.trim().to_string()
            };
            return address(&file, &addr);
        }
    }
    let places: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(Error::not_found(
        "plugin",
        format!(
            "{name} (no {name}.sock, .spec or .json in {})",
            places.join(", ")
        ),
    ))
}

fn address(file: &Path, addr: &str) -> Result<PathBuf> {
    match addr.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => Err(Error::invalid(format!(
            "{}: address {addr:?} is not supported (only unix:///PATH)",
            file.display()
        ))),
    }
}

/// A plugin that answered the handshake as a network driver.
#[derive(Clone, Debug)]
pub struct Plugin {
    pub name: String,
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Plugin {
    /// Find plugin `name` and check that it implements `NetworkDriver`.
    pub fn activate(name: &str, dirs: &[PathBuf], timeout: Duration) -> Result<Plugin> {
        let plugin = Plugin {
            name: name.to_string(),
            socket: discover(name, dirs)?,
            timeout,
        };
        let answer: p::ActivateResponse = plugin.call(p::ACTIVATE, &serde_json::json!({}))?;
        if !answer.implements.iter().any(|i| i == "NetworkDriver") {
            return Err(Error::conflict(format!(
                "plugin {name} implements {:?}, not NetworkDriver",
                answer.implements
            )));
        }
        Ok(plugin)
    }

    /// POST `req` to `path` and decode the answer: a plugin's `{"Err": ...}`, a silent or
    /// absent plugin and a malformed answer are each one error naming the plugin and the call.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.call_inner(path, req, false)?
            .ok_or_else(|| Error::conflict(format!("plugin {}: {path}: no answer", self.name)))
    }

    /// As `call`, for calls a plugin need not implement (as libnetwork treats
    /// ProgramExternalConnectivity): `Ok(None)` when it answers 404.
    pub fn call_optional<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Option<Resp>> {
        self.call_inner(path, req, true)
    }

    fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        optional: bool,
    ) -> Result<Option<Resp>> {
        let what = format!("plugin {} {}", self.name, path.trim_start_matches('/'));
        let body = serde_json::to_vec(req)
            .map_err(|e| Error::invalid(format!("{what}: encode the request: {e}")))?;
        let mut conn = UnixStream::connect(&self.socket).map_err(|e| {
            Error::conflict(format!("{what}: connect to {}: {e}", self.socket.display()))
        })?;
        let (status, answer) = http::post(&mut conn, path, &body, self.timeout)
            .map_err(|e| Error::conflict(format!("{what}: {e} (deadline {:?})", self.timeout)))?;
        if optional && status == 404 {
            return Ok(None);
        }
        if let Some(err) = error_of(&answer) {
            return Err(Error::conflict(format!("{what}: {err}")));
        }
        if status != 200 {
            return Err(Error::conflict(format!("{what}: answered HTTP {status}")));
        }
        decode(path, &answer)
            .map(Some)
            .map_err(|e| Error::conflict(format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tapnet-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A real plugin socket that gives each connection one canned answer.
    fn serve(dir: &Path, name: &str, answers: Vec<&'static [u8]>) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(dir.join(format!("{name}.sock"))).unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let _ = http::read_request(&mut conn, Duration::from_secs(5)).unwrap();
                if !answer.is_empty() {
                    http::write_response(&mut conn, 200, answer, Duration::from_secs(5)).unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(600));
                }
            }
        })
    }

    #[test]
    fn discovery_by_socket_spec_and_json() {
        let dir = temp("disc");
        std::fs::write(dir.join("a.spec"), "unix:///run/a.sock\n").unwrap();
        std::fs::write(
            dir.join("b.json"),
            r#"{"Name":"b","Addr":"unix:///run/b.sock"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("c.spec"), "tcp://127.0.0.1:80").unwrap();
        let dirs = vec![PathBuf::from("/nonexistent"), dir.clone()];
        assert_eq!(discover("a", &dirs).unwrap(), PathBuf::from("/run/a.sock"));
        assert_eq!(discover("b", &dirs).unwrap(), PathBuf::from("/run/b.sock"));
        assert!(
            discover("c", &dirs)
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        let err = discover("d", &dirs).unwrap_err().to_string();
        assert!(err.contains("no such plugin: d"), "{err}");
        assert!(discover("../x", &dirs).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn handshake_errors_garbage_and_silence() {
        let dir = temp("calls");
        let dirs = vec![dir.clone()];
        let server = serve(
            &dir,
            "p",
            vec![
                br#"{"Implements":["NetworkDriver"]}"#,
                br#"{"Err":"no pool for you"}"#,
                b"this is not json",
                b"",
            ],
        );
        let mut plugin = Plugin::activate("p", &dirs, Duration::from_secs(5)).unwrap();
        let err = plugin
            .call::<_, serde_json::Value>(p::CREATE_NETWORK, &p::CreateNetworkRequest::default())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "plugin p NetworkDriver.CreateNetwork: no pool for you");
        let err = plugin
            .call::<_, serde_json::Value>(p::DELETE_NETWORK, &p::NetworkRequest::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "{err}");
        plugin.timeout = Duration::from_millis(200);
        let err = plugin
            .call::<_, serde_json::Value>(p::LEAVE, &p::EndpointRequest::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
        server.join().unwrap();
        // A plugin that is not a network driver.
        let dir2 = temp("notnet");
        let server = serve(&dir2, "v", vec![br#"{"Implements":["VolumeDriver"]}"#]);
        let err = Plugin::activate("v", std::slice::from_ref(&dir2), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not NetworkDriver"), "{err}");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }

    #[test]
    fn optional_calls_may_be_missing() {
        let dir = temp("optional");
        let listener = UnixListener::bind(dir.join("o.sock")).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let _ = http::read_request(&mut conn, Duration::from_secs(5)).unwrap();
                let body = br#"{"Err":"unknown"}"#;
                http::write_response(&mut conn, 404, body, Duration::from_secs(5)).unwrap();
            }
        });
        let plugin = Plugin {
            name: "o".into(),
            socket: dir.join("o.sock"),
            timeout: Duration::from_secs(5),
        };
        let missing: Option<serde_json::Value> = plugin
            .call_optional(p::PROGRAM_EXTERNAL, &p::EndpointRequest::default())
            .unwrap();
        assert!(missing.is_none());
        let err = plugin
            .call::<_, serde_json::Value>(p::JOIN, &p::EndpointRequest::default())
            .unwrap_err();
        assert!(err.to_string().contains("unknown"), "{err}");
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
