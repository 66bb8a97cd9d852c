//! Turning model objects into the API's view types (what inspect and ls print).

use super::model::{Endpoint, Network, Sandbox, State};
use crate::api::types::{EndpointView, InterfaceView, NetworkView, SandboxView};

fn cidr(network: Option<&Network>, ep: &Endpoint) -> Option<String> {
    let prefix = network.and_then(|n| n.subnet).map(|s| s.prefix)?;
    ep.ipv4.map(|ip| format!("{ip}/{prefix}"))
}

pub fn network_view(state: &State, net: &Network) -> NetworkView {
    NetworkView {
        name: net.name.clone(),
        id: net.id.clone(),
        driver: net.driver.name().to_string(),
        subnet: net.subnet.map(|s| s.to_string()),
        gateway: net.gateway,
        ip_range: net.ip_range.map(|r| r.to_string()),
        internal: net.internal,
        mtu: net.mtu,
        vni: net.vni,
        mac_aging_s: net.mac_aging_s,
        offload: net.offload,
        options: net.options.clone(),
        endpoints: state
            .endpoints_on(&net.name)
            .map(|(sb, ep)| EndpointView {
                sandbox: sb.name.clone(),
                interface: ep.interface.clone(),
                mac: ep.mac.map(|m| m.to_string()),
                ipv4: cidr(Some(net), ep),
                aliases: ep.aliases.clone(),
            })
            .collect(),
        nat: None,
    }
}

pub fn sandbox_view(state: &State, sb: &Sandbox) -> SandboxView {
    SandboxView {
        name: sb.name.clone(),
        id: sb.id.clone(),
        hostname: sb.hostname.clone(),
        netns: sb.netns.display().to_string(),
        utsns: sb.utsns.as_ref().map(|p| p.display().to_string()),
        mntns: sb.mntns.as_ref().map(|p| p.display().to_string()),
        interfaces: sb
            .endpoints
            .iter()
            .map(|ep| InterfaceView {
                network: ep.network.clone(),
                interface: ep.interface.clone(),
                mac: ep.mac.map(|m| m.to_string()),
                ipv4: cidr(state.network(&ep.network), ep),
                aliases: ep.aliases.clone(),
                impairment: ep.impairment.clone(),
                blocked: ep.blocked.clone(),
            })
            .collect(),
        ports: sb.ports.iter().map(|p| p.to_string()).collect(),
    }
}
