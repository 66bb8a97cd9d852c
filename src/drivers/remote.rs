//! The remote driver: a third-party plugin serves the network over libnetwork's remote
//! protocol (`src/plugin/client.rs`). tapnet keeps the model and IPAM and tells the plugin:
//! CreateNetwork with the pool and gateway tapnet chose and the `--opt` map, DeleteNetwork on
//! removal. A plugin that refuses, hangs or answers garbage fails the request, which then
//! changes nothing. Endpoints on remote networks are not implemented yet and are refused.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Ctx, NetworkDriver, Options};
use crate::control::model::Network;
use crate::error::{Error, Result};
use crate::plugin::client::{CALL_TIMEOUT, Plugin};
use crate::plugin::protocol as p;

pub struct Remote;

fn plugin_of(ctx: &Ctx<'_>, net: &Network) -> Result<Plugin> {
    let name = net
        .plugin
        .as_deref()
        .ok_or_else(|| Error::invalid(format!("network {} has no plugin name", net.name)))?;
    Plugin::activate(name, ctx.plugin_dirs, CALL_TIMEOUT)
}

/// The CreateNetwork request for `net`, as dockerd would send it.
pub fn create_request(net: &Network) -> p::CreateNetworkRequest {
    let generic: serde_json::Map<String, Value> = net
        .options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut options = BTreeMap::new();
    options.insert(p::GENERIC_OPTIONS.to_string(), Value::Object(generic));
    let ipv4 = match (net.subnet, net.gateway) {
        (Some(subnet), Some(gw)) => vec![p::IpamData {
            address_space: "LocalDefault".into(),
            pool: subnet.to_string(),
            gateway: format!("{gw}/{}", subnet.prefix),
            aux_addresses: None,
        }],
        _ => Vec::new(),
    };
    p::CreateNetworkRequest {
        network_id: net.id.clone(),
        options: Some(options),
        ipv4_data: Some(ipv4),
        ipv6_data: Some(Vec::new()),
    }
}

impl NetworkDriver for Remote {
    fn name(&self) -> &'static str {
        "remote"
    }
    fn check_create(&self) -> Result<()> {
        Ok(())
    }
    /// Every key goes to the plugin, which judges them.
    fn check_options(&self, _options: &Options) -> Result<()> {
        Ok(())
    }
    fn create_network(&self, ctx: &Ctx<'_>, net: &Network) -> Result<()> {
        let plugin = plugin_of(ctx, net)?;
        let caps: p::CapabilitiesResponse =
            plugin.call(p::GET_CAPABILITIES, &serde_json::json!({}))?;
        if !caps.scope.is_empty() && caps.scope != "local" {
            return Err(Error::conflict(format!(
                "plugin {}: scope {:?} is not supported (tapnet is a single host)",
                plugin.name, caps.scope
            )));
        }
        let _: Value = plugin.call(p::CREATE_NETWORK, &create_request(net))?;
        Ok(())
    }
    fn delete_network(&self, ctx: &Ctx<'_>, net: &Network) -> Result<()> {
        let plugin = plugin_of(ctx, net)?;
        let _: Value = plugin.call(
            p::DELETE_NETWORK,
            &p::NetworkRequest {
                network_id: net.id.clone(),
            },
        )?;
        Ok(())
    }
}
