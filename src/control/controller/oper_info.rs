//! EndpointOperInfo: inspect asks a remote network's plugin about each of its endpoints. The
//! questions are planned under the controller's lock and asked after it is released, so a slow
//! plugin delays only the inspect that asked.

use super::*;
use crate::api::types::{NetworkView, SandboxView};
use crate::plugin::client::{CALL_TIMEOUT, Plugin};
use crate::plugin::protocol as p;

type Info = BTreeMap<String, Value>;

/// One endpoint to ask about: its plugin and the IDs the plugin knows it by.
struct Query {
    plugin: String,
    request: p::EndpointRequest,
}

/// The questions of one inspect, in the order of the view's endpoints (`None`: not remote).
pub(super) struct Queries {
    plugin_dirs: Vec<std::path::PathBuf>,
    queries: Vec<Option<Query>>,
}

impl Inner {
    fn query(&self, ep: &Endpoint) -> Option<Query> {
        let net = self.state.network(&ep.network)?;
        if !drivers::of(net.driver).plugin_served() {
            return None;
        }
        Some(Query {
            plugin: net.plugin.clone()?,
            request: p::EndpointRequest {
                network_id: net.id.clone(),
                endpoint_id: ep.id.clone(),
            },
        })
    }

    fn queries(&self, endpoints: Vec<&Endpoint>) -> Queries {
        Queries {
            plugin_dirs: self.plugin_dirs.clone(),
            queries: endpoints.into_iter().map(|ep| self.query(ep)).collect(),
        }
    }

    /// The questions for `sandbox inspect NAME`: one per interface.
    pub(super) fn sandbox_queries(&self, name: &str) -> Result<Queries> {
        Ok(self.queries(self.sandbox(name)?.endpoints.iter().collect()))
    }

    /// The questions for `network inspect NAME`: its sandboxes' endpoints come first in the
    /// view (`views::network_view`), in the order of `State::endpoints_on`.
    pub(super) fn network_queries(&self, name: &str) -> Result<Queries> {
        self.network(name)?;
        Ok(self.queries(self.state.endpoints_on(name).map(|(_, ep)| ep).collect()))
    }
}

impl Queries {
    /// Ask every plugin (no lock held): its answer, or `{"error": ...}` saying why not.
    fn answers(self) -> Vec<Option<Info>> {
        let dirs = self.plugin_dirs;
        self.queries
            .into_iter()
            .map(|q| {
                let q = q?;
                let answer = Plugin::activate(&q.plugin, &dirs, CALL_TIMEOUT).and_then(|plugin| {
                    plugin.call::<_, p::EndpointInfoResponse>(p::ENDPOINT_OPER_INFO, &q.request)
                });
                Some(match answer {
                    Ok(info) => info.value,
                    Err(e) => Info::from([("error".to_string(), Value::String(e.to_string()))]),
                })
            })
            .collect()
    }

    pub(super) fn fill_sandbox(self, view: &mut SandboxView) {
        for (iface, info) in view.interfaces.iter_mut().zip(self.answers()) {
            iface.plugin_info = info;
        }
    }

    pub(super) fn fill_network(self, view: &mut NetworkView) {
        for (ep, info) in view.endpoints.iter_mut().zip(self.answers()) {
            ep.plugin_info = info;
        }
    }
}
