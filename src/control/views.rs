//! Turning model objects into the API's view types (what inspect and ls print).

use super::model::{Endpoint, Network, Sandbox, State};
use crate::api::types::{EndpointView, InterfaceView, NetworkView, SandboxView};
use crate::paths::StateDir;

fn cidr(network: Option<&Network>, ep: &Endpoint) -> Option<String> {
    let prefix = network.and_then(|n| n.subnet).map(|s| s.prefix)?;
    ep.ipv4.map(|ip| format!("{ip}/{prefix}"))
}

fn cidr6(network: Option<&Network>, ep: &Endpoint) -> Option<String> {
    let prefix = network.and_then(|n| n.subnet6).map(|s| s.prefix)?;
    ep.ipv6.map(|ip| format!("{ip}/{prefix}"))
}

pub fn network_view(state: &State, net: &Network) -> NetworkView {
    NetworkView {
        name: net.name.clone(),
        id: net.id.clone(),
        driver: net.driver.name().to_string(),
        subnet: net.subnet.map(|s| s.to_string()),
        gateway: net.gateway,
        subnet6: net.subnet6.map(|s| s.to_string()),
        gateway6: net.gateway6,
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
                ipv6: cidr6(Some(net), ep),
                aliases: ep.aliases.clone(),
                plugin_info: None,
                container_id: None,
                netns: None,
                kind: None,
            })
            .chain(docker_endpoints(state, net))
            .chain(cni_endpoints(state, net))
            .chain(vm_port_endpoints(state, net))
            .collect(),
        nat: None,
        overlay: None,
        host: host_access_view(net),
    }
}

/// The host's interface of a `host_access` network, as its options keep it.
fn host_access_view(net: &Network) -> Option<crate::api::types::HostAccessView> {
    let bridge = net
        .typed
        .as_ref()
        .and_then(|t| t.bridge.as_ref())
        .filter(|b| b.host_access)?;
    let with_prefix = |ip: String, prefix: Option<u8>| prefix.map(|p| format!("{ip}/{p}"));
    Some(crate::api::types::HostAccessView {
        interface: crate::drivers::bridge::host_interface(&net.name),
        ipv4: bridge
            .host_ip
            .and_then(|ip| with_prefix(ip.to_string(), net.subnet.map(|s| s.prefix))),
        ipv6: bridge
            .host_ip6
            .and_then(|ip| with_prefix(ip.to_string(), net.subnet6.map(|s| s.prefix))),
    })
}

/// Attachments CNI runtimes made on `net` through `tapnet-cni`: the sandbox is shown as `cni:`
/// and the container id's first 12 characters (as `stats` labels their ports), with the whole
/// id and the runtime's namespace beside it.
fn cni_endpoints<'a>(
    state: &'a State,
    net: &'a Network,
) -> impl Iterator<Item = EndpointView> + 'a {
    state
        .cni
        .iter()
        .filter(move |a| a.network == net.name)
        .map(move |a| {
            let short = a.container_id.get(..12).unwrap_or(&a.container_id);
            EndpointView {
                interface: Some(a.ifname.clone()),
                container_id: Some(a.container_id.clone()),
                netns: Some(a.netns.clone()),
                kind: Some("cni".to_string()),
                ..station_view(net, format!("cni:{short}"), a.mac, a.ipv4, a.ipv6)
            }
        })
}

/// Endpoints dockerd made on `net` through tapnet's Docker plugin: the sandbox is shown as
/// `docker:` and the endpoint id's first 12 digits, the interface as the TAP's name.
fn docker_endpoints<'a>(
    state: &'a State,
    net: &'a Network,
) -> impl Iterator<Item = EndpointView> + 'a {
    state
        .docker_plugins
        .iter()
        .flat_map(|p| p.endpoints.iter())
        .filter(move |(_, ep)| ep.network == net.name)
        .map(move |(id, ep)| {
            let short = id.get(..12).unwrap_or(id);
            EndpointView {
                interface: ep.tap.clone(),
                ..station_view(net, format!("docker:{short}"), ep.mac, ep.ipv4, ep.ipv6)
            }
        })
}

/// VMs' ports on `net` (`tapnet port add`): the port's name as the sandbox, with its kind.
fn vm_port_endpoints<'a>(
    state: &'a State,
    net: &'a Network,
) -> impl Iterator<Item = EndpointView> + 'a {
    state
        .vm_ports
        .iter()
        .filter(move |p| p.network == net.name)
        .map(move |p| EndpointView {
            kind: Some(p.kind.name().to_string()),
            ..station_view(net, p.name.clone(), p.mac, p.ipv4, p.ipv6)
        })
}

/// The row of a station on `net` that is not a sandbox's endpoint: its addresses with the
/// network's prefix lengths, nothing else.
fn station_view(
    net: &Network,
    sandbox: String,
    mac: crate::wire::MacAddr,
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
) -> EndpointView {
    EndpointView {
        sandbox,
        interface: None,
        mac: Some(mac.to_string()),
        ipv4: ipv4.map(|ip| format!("{ip}/{}", net.subnet.map_or(32, |s| s.prefix))),
        ipv6: ipv6.map(|ip| format!("{ip}/{}", net.subnet6.map_or(128, |s| s.prefix))),
        aliases: Vec::new(),
        plugin_info: None,
        container_id: None,
        netns: None,
        kind: None,
    }
}

/// `enter` is the command line that enters the sandbox by hand, which depends on the mode the
/// daemon runs in (see `daemon::Mode::enter_hint`).
pub fn sandbox_view(state: &State, sb: &Sandbox, dirs: &StateDir, enter: String) -> SandboxView {
    let own_namespaces = !crate::drivers::shares_host(state, sb);
    SandboxView {
        name: sb.name.clone(),
        id: sb.id.clone(),
        hostname: sb.hostname.clone(),
        netns: dirs.netns_path(&sb.name).display().to_string(),
        utsns: own_namespaces.then(|| dirs.utsns_path(&sb.name).display().to_string()),
        etc: own_namespaces.then(|| dirs.etc_dir(&sb.name).display().to_string()),
        enter,
        interfaces: sb
            .endpoints
            .iter()
            .map(|ep| InterfaceView {
                network: ep.network.clone(),
                interface: ep.interface.clone(),
                mac: ep.mac.map(|m| m.to_string()),
                ipv4: cidr(state.network(&ep.network), ep),
                ipv6: cidr6(state.network(&ep.network), ep),
                aliases: ep.aliases.clone(),
                impairment: ep.impairment.clone(),
                blocked: ep.blocked.clone(),
                plugin_info: None,
            })
            .collect(),
        // Each binding, as Docker lists them: 0.0.0.0 and [::] for a port on all addresses.
        ports: sb.ports.iter().flat_map(|p| p.bindings()).collect(),
    }
}
