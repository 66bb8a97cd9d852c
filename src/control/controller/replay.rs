//! The answer to a request the state already holds the commit of: a client's retry after the
//! daemon died between commit and reply. Done again, a create would say "already exists" for
//! the object that same call made; the retry gets the answer the first try would have had.

use serde_json::{Value, json};

use super::{Inner, value};
use crate::api::types::Request;
use crate::error::Result;

impl Inner {
    /// The first try's answer, rebuilt from the state; `None` for requests that are safe to
    /// do again (they set values rather than make or remove objects) or whose object has
    /// changed since, so the request runs as usual.
    pub(super) fn replay(&self, request: &Request) -> Option<Result<Value>> {
        let answer = match request {
            Request::NetworkCreate(req) => self.network_view(&req.name).and_then(|v| value(&v)),
            Request::SandboxCreate(req) => self.sandbox_view(&req.name).and_then(|v| value(&v)),
            Request::NetworkConnect { sandbox, .. }
            | Request::NetworkDisconnect { sandbox, .. } => {
                self.sandbox_view(sandbox).and_then(|v| value(&v))
            }
            Request::NetworkRemove { name } | Request::SandboxRemove { name, .. } => {
                Ok(json!({"removed": name}))
            }
            Request::CniAdd {
                container_id,
                ifname,
                ..
            } => self.cni_check(container_id, ifname).and_then(|v| value(&v)),
            Request::CniDel { ifname, .. } => Ok(json!({"removed": ifname})),
            Request::PolicyAdd { network, .. } | Request::PolicyRemove { network, .. } => {
                self.policy_view(network).and_then(|v| value(&v))
            }
            _ => return None,
        };
        answer.ok().map(Ok)
    }
}
