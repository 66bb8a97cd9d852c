//! The remote driver: a third-party plugin serves the network over libnetwork's remote
//! protocol (`src/plugin/client.rs`). tapnet keeps the model and IPAM and tells the plugin:
//! CreateNetwork with the pool and gateway tapnet chose and the `--opt` map, DeleteNetwork on
//! removal. An endpoint is CreateEndpoint (tapnet's address and MAC; a MAC the plugin returns
//! is used), Join and ProgramExternalConnectivity (optional: a 404 is fine, as in libnetwork);
//! tapnet then moves the plugin's link (`SrcName`) into the sandbox, names
//! it `DstPrefix` plus the endpoint's index, and sets its address, static routes and the
//! plugin's gateway as default route. Sandbox removal sends RevokeExternalConnectivity, Leave
//! and DeleteEndpoint. A plugin
//! that refuses, hangs or answers garbage fails the request, and what the plugin made for it
//! is undone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::options::BridgeOptions;
use super::{Ctx, NetOptions, NetworkDriver, Options, Unwired};
use crate::control::model::{Endpoint, Network};
use crate::control::wiring::{self, PluginLink};
use crate::error::{Error, Result};
use crate::plugin::client::{CALL_TIMEOUT, Plugin};
use crate::plugin::protocol as p;
use crate::wire::MacAddr;

pub struct Remote;

fn plugin_of(dirs: &[PathBuf], net: &Network) -> Result<Plugin> {
    let name = net
        .plugin
        .as_deref()
        .ok_or_else(|| Error::invalid(format!("network {} has no plugin name", net.name)))?;
    Plugin::activate(name, dirs, CALL_TIMEOUT)
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
    /// Every key goes to the plugin, which judges them; the bridge's keys are held to the
    /// bridge's values (`mac_aging` gives the network's MAC aging).
    fn validate(&self, options: &Options) -> Result<NetOptions> {
        Ok(NetOptions::plain(
            BridgeOptions::parse(options)?.mac_aging_s,
        ))
    }
    fn addressed(&self) -> bool {
        true
    }
    fn plugin_served(&self) -> bool {
        true
    }
    fn routes_itself(&self) -> bool {
        true
    }
    fn create_network(&self, plugin_dirs: &[PathBuf], net: &Network) -> Result<()> {
        create(plugin_dirs, net)
    }
    fn setup_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        netns: &Path,
        _sandbox: &str,
        ep: &Endpoint,
        net: &Network,
    ) -> Result<Option<MacAddr>> {
        setup(ctx.plugin_dirs, netns, ep, net)
    }
    fn setup_endpoint_outside(
        &self,
        plugin_dirs: &[PathBuf],
        netns: &Path,
        ep: &Endpoint,
        net: &Network,
    ) -> Result<Option<MacAddr>> {
        setup(plugin_dirs, netns, ep, net)
    }
    /// The plugin's link has no switch port; the plugin hears RevokeExternalConnectivity,
    /// Leave and DeleteEndpoint.
    fn take_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        _sandbox: &str,
        ep: &Endpoint,
        net: &Network,
    ) -> Unwired {
        Unwired {
            port: None,
            plugin: Some((ctx.plugin_dirs.to_vec(), ep.clone(), net.clone())),
        }
    }
    fn delete_network(&self, plugin_dirs: &[PathBuf], net: &Network) -> Result<()> {
        delete(plugin_dirs, net)
    }
}

// The plugin's side of each step, given only where plugins are looked for: the controller
// calls these without its lock (`controller/remote.rs`), the seam's hooks with it (restore).

/// GetCapabilities (local scope only) and CreateNetwork.
pub fn create(dirs: &[PathBuf], net: &Network) -> Result<()> {
    let plugin = plugin_of(dirs, net)?;
    let caps: p::CapabilitiesResponse = plugin.call(p::GET_CAPABILITIES, &serde_json::json!({}))?;
    if !caps.scope.is_empty() && caps.scope != "local" {
        return Err(Error::conflict(format!(
            "plugin {}: scope {:?} is not supported (tapnet is a single host)",
            plugin.name, caps.scope
        )));
    }
    let _: Value = plugin.call(p::CREATE_NETWORK, &create_request(net))?;
    Ok(())
}
/// CreateEndpoint, Join and ProgramExternalConnectivity, then the plugin's link moved into the
/// namespace at `netns` and configured; the MAC the link got. Undone on any failure.
pub fn setup(
    dirs: &[PathBuf],
    netns: &Path,
    ep: &Endpoint,
    net: &Network,
) -> Result<Option<MacAddr>> {
    let (Some(interface), Some(mac), Some(ipv4), Some(subnet)) =
        (ep.interface.clone(), ep.mac, ep.ipv4, net.subnet)
    else {
        return Ok(None);
    };
    // A restarted daemon finds the link where it put it: the plugin holds it still.
    if wiring::link_exists_in(netns, &interface) {
        return Ok(None);
    }
    let plugin = plugin_of(dirs, net)?;
    let endpoint = p::EndpointRequest {
        network_id: net.id.clone(),
        endpoint_id: ep.id.clone(),
    };
    let created: p::CreateEndpointResponse = plugin.call(
        p::CREATE_ENDPOINT,
        &p::CreateEndpointRequest {
            network_id: net.id.clone(),
            endpoint_id: ep.id.clone(),
            interface: Some(p::EndpointInterface {
                address: format!("{ipv4}/{}", subnet.prefix),
                address_ipv6: String::new(),
                mac_address: mac.to_string(),
            }),
            options: Some(BTreeMap::new()),
        },
    )?;
    let undo = |joined: bool| {
        let mut calls = Vec::new();
        if joined {
            calls.push(p::LEAVE);
        }
        calls.push(p::DELETE_ENDPOINT);
        for call in calls {
            if let Err(e) = plugin.call::<_, Value>(call, &endpoint) {
                eprintln!("tapnet: undo endpoint {}: {e}", ep.id);
            }
        }
    };
    let joined = (|| {
        let mac = match created.interface.map(|i| i.mac_address) {
            Some(m) if !m.is_empty() => m.parse::<MacAddr>().map_err(|e| {
                Error::conflict(format!("plugin {}: malformed MAC {m:?}: {e}", plugin.name))
            })?,
            _ => mac,
        };
        let join: p::JoinResponse = plugin.call(
            p::JOIN,
            &p::JoinRequest {
                network_id: net.id.clone(),
                endpoint_id: ep.id.clone(),
                sandbox_key: netns.display().to_string(),
                options: Some(BTreeMap::new()),
            },
        )?;
        Ok((mac, join))
    })();
    let (mac, join) = match joined {
        Ok(j) => j,
        Err(e) => {
            undo(false);
            return Err(e);
        }
    };
    let programmed = plugin
        .call_optional::<_, Value>(
            p::PROGRAM_EXTERNAL,
            &p::ProgramExternalRequest {
                network_id: net.id.clone(),
                endpoint_id: ep.id.clone(),
                options: Some(BTreeMap::new()),
            },
        )
        .map(|_| ());
    if let Err(e) = programmed {
        undo(true);
        return Err(e);
    }
    let adopted = plan_link(
        &plugin.name,
        &interface,
        mac,
        ipv4,
        subnet.prefix,
        net.mtu,
        &join,
    )
    .and_then(|link| wiring::adopt_link(netns, link));
    if let Err(e) = adopted {
        let _ = plugin.call_optional::<_, Value>(p::REVOKE_EXTERNAL, &endpoint);
        undo(true);
        return Err(e);
    }
    Ok(Some(mac))
}

/// RevokeExternalConnectivity, Leave and DeleteEndpoint.
pub fn teardown(dirs: &[PathBuf], ep: &Endpoint, net: &Network) -> Result<()> {
    let plugin = plugin_of(dirs, net)?;
    let endpoint = p::EndpointRequest {
        network_id: net.id.clone(),
        endpoint_id: ep.id.clone(),
    };
    let revoked = plugin.call_optional::<_, Value>(p::REVOKE_EXTERNAL, &endpoint);
    let left = plugin.call::<_, Value>(p::LEAVE, &endpoint);
    revoked?;
    plugin.call::<_, Value>(p::DELETE_ENDPOINT, &endpoint)?;
    left.map(|_| ())
}

/// DeleteNetwork.
pub fn delete(dirs: &[PathBuf], net: &Network) -> Result<()> {
    let plugin = plugin_of(dirs, net)?;
    let _: Value = plugin.call(
        p::DELETE_NETWORK,
        &p::NetworkRequest {
            network_id: net.id.clone(),
        },
    )?;
    Ok(())
}

/// The link Join describes, checked: a source name, the name in the sandbox (`DstPrefix` and
/// the index of tapnet's `ethN`), the gateway and static routes.
fn plan_link(
    plugin: &str,
    interface: &str,
    mac: MacAddr,
    ipv4: Ipv4Addr,
    prefix: u8,
    mtu: u32,
    join: &p::JoinResponse,
) -> Result<PluginLink> {
    let bad = |what: String| Error::conflict(format!("plugin {plugin}: Join: {what}"));
    let names = join
        .interface_name
        .as_ref()
        .filter(|n| !n.src_name.is_empty())
        .ok_or_else(|| bad("no InterfaceName.SrcName".into()))?;
    let index = interface.trim_start_matches(|c: char| !c.is_ascii_digit());
    let dst_prefix = if names.dst_prefix.is_empty() {
        "eth"
    } else {
        names.dst_prefix.as_str()
    };
    let name = format!("{dst_prefix}{index}");
    let tame = |n: &str| {
        !n.is_empty()
            && n.len() < 16
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !tame(&name) || !tame(&names.src_name) {
        return Err(bad(format!(
            "unusable interface names {:?} / {name:?}",
            names.src_name
        )));
    }
    let gateway = if join.gateway.is_empty() {
        None
    } else {
        Some(
            join.gateway
                .parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("malformed Gateway {:?}", join.gateway)))?,
        )
    };
    let mut routes = Vec::new();
    for r in join.static_routes.iter().flatten() {
        let (dest, len) = r
            .destination
            .split_once('/')
            .and_then(|(d, l)| Some((d.parse::<Ipv4Addr>().ok()?, l.parse::<u8>().ok()?)))
            .filter(|(_, l)| *l <= 32)
            .ok_or_else(|| bad(format!("malformed route destination {:?}", r.destination)))?;
        let via = match r.route_type {
            1 => None,
            _ => Some(
                r.next_hop
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("malformed NextHop {:?}", r.next_hop)))?,
            ),
        };
        routes.push((dest, len, via));
    }
    Ok(PluginLink {
        src: names.src_name.clone(),
        name,
        mac,
        mtu,
        ipv4,
        prefix,
        routes,
        gateway,
    })
}
