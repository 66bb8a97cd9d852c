//! The daemon side of the control socket: one thread per connection, one request per line.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use super::MAX_REQUEST_BYTES;
use super::types::{Request, Response};
use crate::error::Result;

/// Something that answers requests: the controller.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Result<serde_json::Value>;
}

pub fn serve(listener: UnixListener, handler: Arc<dyn Handler>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let handler = handler.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || serve_connection(conn, handler.as_ref()));
        if let Err(e) = spawned {
            eprintln!("tapnet: cannot serve a control connection: {e}");
        }
    }
}

fn serve_connection(conn: UnixStream, handler: &dyn Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn.take(MAX_REQUEST_BYTES + 1));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(n) if n as u64 > MAX_REQUEST_BYTES => {
                let _ = reply(&mut writer, error("request too large"));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = reply(&mut writer, error(&format!("unreadable request: {e}")));
                return;
            }
        }
        let response = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => match handler.handle(request) {
                Ok(result) => Response::Ok { result },
                Err(e) => error(&e.to_string()),
            },
            Err(e) => error(&format!("malformed request: {e}")),
        };
        if reply(&mut writer, response).is_err() {
            return;
        }
    }
}

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
