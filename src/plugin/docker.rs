//! tapnet as a Docker network plugin: a thread per plugin name accepts dockerd's connections on
//! `/run/docker/plugins/NAME.sock` and hands each call to the controller (`Host`), one short
//! thread per connection (dockerd makes calls for several containers at once; the controller's
//! mutex orders them).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::http;
use super::protocol::{self as p, decode};
use crate::error::{Context, Error, Result};

/// Where dockerd looks for plugin sockets, whatever its `--exec-root` says.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// The default plugin name: `docker network create -d tapnet`.
pub const DEFAULT_NAME: &str = "tapnet";
/// dockerd sends the whole request at once; a connection silent this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 32;

/// What the controller does for each call, named by the plugin that received it.
pub trait Host: Send + Sync + 'static {
    fn create_network(&self, plugin: &str, req: p::CreateNetworkRequest) -> Result<()>;
    fn delete_network(&self, plugin: &str, req: p::NetworkRequest) -> Result<()>;
    fn create_endpoint(
        &self,
        plugin: &str,
        req: p::CreateEndpointRequest,
    ) -> Result<p::CreateEndpointResponse>;
    fn endpoint_info(
        &self,
        plugin: &str,
        req: p::EndpointRequest,
    ) -> Result<p::EndpointInfoResponse>;
    fn delete_endpoint(&self, plugin: &str, req: p::EndpointRequest) -> Result<()>;
    fn join(&self, plugin: &str, req: p::JoinRequest) -> Result<p::JoinResponse>;
    fn leave(&self, plugin: &str, req: p::EndpointRequest) -> Result<()>;
    fn program_external(&self, plugin: &str, req: p::ProgramExternalRequest) -> Result<()>;
    fn revoke_external(&self, plugin: &str, req: p::EndpointRequest) -> Result<()>;
}

/// The socket path of plugin `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// A plugin name becomes a file name and dockerd's driver name: keep it tame.
pub fn validate_name(name: &str) -> Result<()> {
    crate::control::model::validate_name("plugin", name).map_err(Error::Invalid)
}

/// A running plugin server; dropping it stops the server and removes its socket.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Bind `/run/docker/plugins/NAME.sock` (root only) and serve it on a thread.
    pub fn start(name: &str, host: Arc<dyn Host>) -> Result<Server> {
        validate_name(name)?;
        std::fs::create_dir_all(PLUGIN_DIR).context(|| format!("create {PLUGIN_DIR}"))?;
        let path = socket_path(name);
        // A socket left by a daemon that died is stale: only one daemon serves a name.
        if UnixStream::connect(&path).is_ok() {
            return Err(Error::conflict(format!(
                "{} is already served by another process",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).context(|| format!("listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .context(|| format!("restrict {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (plugin, flag) = (name.to_string(), stop.clone());
        std::thread::Builder::new()
            .name(format!("plugin-{name}"))
            .spawn(move || {
                crate::guard::guarded(&format!("plugin-{plugin}"), || {
                    accept_loop(&plugin, listener, host, &flag)
                })
            })
            .context(|| format!("spawn the thread of plugin {name}"))?;
        Ok(Server { path, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(name: &str, listener: UnixListener, host: Arc<dyn Host>, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        if busy.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = http::write_response(&mut conn, 500, &err_body("plugin busy"), IO_TIMEOUT);
            continue;
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (host, plugin, busy2) = (host.clone(), name.to_string(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("plugin-conn".into())
            .spawn(move || {
                crate::guard::guarded("plugin-conn", || serve_one(&plugin, &mut conn, &*host));
                busy2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn err_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&p::ErrorResponse {
        err: message.to_string(),
    })
    .unwrap_or_else(|_| b"{\"Err\":\"error\"}".to_vec())
}

fn serve_one(plugin: &str, conn: &mut UnixStream, host: &dyn Host) {
    let req = match http::read_request(conn, IO_TIMEOUT) {
        Ok(r) => r,
        Err(e) => {
            let _ = http::write_response(conn, 400, &err_body(&e), IO_TIMEOUT);
            return;
        }
    };
    let (status, body) = if req.method != "POST" {
        (
            405,
            err_body(&format!("{} {}: only POST is served", req.method, req.path)),
        )
    } else {
        match dispatch(plugin, &req.path, &req.body, host) {
            Ok(Some(body)) => (200, body),
            Ok(None) => (404, err_body(&format!("unknown call {}", req.path))),
            // The call failed: dockerd shows the message and undoes its side.
            Err(e) => (200, err_body(&format!("tapnet: {e}"))),
        }
    };
    if let Err(e) = http::write_response(conn, status, &body, IO_TIMEOUT) {
        eprintln!("tapnet: plugin {plugin}: answer to {}: {e}", req.path);
    }
}

fn json<T: Serialize>(v: &T) -> Result<Option<Vec<u8>>> {
    serde_json::to_vec(v)
        .map(Some)
        .map_err(|e| Error::invalid(format!("encode the answer: {e}")))
}

fn body<T: serde::de::DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T> {
    decode(path.trim_start_matches('/'), bytes).map_err(Error::Invalid)
}

/// Answer one call: `Ok(None)` for a path the protocol does not have.
pub fn dispatch(
    plugin: &str,
    path: &str,
    bytes: &[u8],
    host: &dyn Host,
) -> Result<Option<Vec<u8>>> {
    let empty = || json(&serde_json::json!({}));
    match path {
        p::ACTIVATE => json(&p::ActivateResponse {
            implements: vec!["NetworkDriver".into()],
        }),
        p::GET_CAPABILITIES => json(&p::CapabilitiesResponse {
            scope: "local".into(),
            connectivity_scope: "local".into(),
        }),
        p::CREATE_NETWORK => {
            host.create_network(plugin, body(path, bytes)?)?;
            empty()
        }
        p::DELETE_NETWORK => {
            host.delete_network(plugin, body(path, bytes)?)?;
            empty()
        }
        p::CREATE_ENDPOINT => json(&host.create_endpoint(plugin, body(path, bytes)?)?),
        p::ENDPOINT_OPER_INFO => json(&host.endpoint_info(plugin, body(path, bytes)?)?),
        p::DELETE_ENDPOINT => {
            host.delete_endpoint(plugin, body(path, bytes)?)?;
            empty()
        }
        p::JOIN => json(&host.join(plugin, body(path, bytes)?)?),
        p::LEAVE => {
            host.leave(plugin, body(path, bytes)?)?;
            empty()
        }
        p::PROGRAM_EXTERNAL => {
            host.program_external(plugin, body(path, bytes)?)?;
            empty()
        }
        p::REVOKE_EXTERNAL => {
            host.revoke_external(plugin, body(path, bytes)?)?;
            empty()
        }
        // Node discovery: nothing to do for a single host.
        p::DISCOVER_NEW | p::DISCOVER_DELETE => {
            let _: serde_json::Value = body(path, bytes)?;
            empty()
        }
        p::ALLOCATE_NETWORK | p::FREE_NETWORK => Err(Error::invalid(format!(
            "{path}: tapnet is a local-scope driver"
        ))),
        _ => Ok(None),
    }
}
