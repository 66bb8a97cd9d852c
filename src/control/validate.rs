//! The checks an object passes when the API makes it, applied again to every object of a loaded
//! state file: an edited or damaged file must not give the daemon what the API refuses (a
//! hostname that adds lines to /etc/hosts, an address outside its subnet, a multicast subnet).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::ipam;
use super::ipam6;
use super::model::{
    BUILTIN, CniAttachment, DockerPlugin, MAX_MTU, MIN_MTU, Network, Sandbox, State, validate_name,
};
use super::ports::PublishedPort;
use crate::drivers::{self, NetOptions};
use crate::error::{Error, Result};
use crate::wire::Ipv4Net;
use crate::wire::Ipv6Net;
use crate::wire::MacAddr;

pub use crate::datapath::vxlan::MAX_VNI;

/// A hostname a sandbox may be given: dot-separated labels of letters, digits and '-'.
pub fn hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid hostname {h:?}")))
    }
}

pub fn mtu(mtu: u32) -> Result<()> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "MTU {mtu} is out of range ({MIN_MTU}-{MAX_MTU})"
        )))
    }
}

pub fn vni(vni: u32) -> Result<()> {
    if vni == 0 || vni > MAX_VNI {
        return Err(Error::invalid(format!(
            "VNI {vni} is out of range (1-{MAX_VNI})"
        )));
    }
    Ok(())
}

/// Interface names of a CNI attachment (the runtime's `CNI_IFNAME`).
pub fn cni_ifname(ifname: &str) -> Result<()> {
    crate::cni::validate_ifname(ifname).map_err(Error::invalid)
}

/// A published port that would want a host socket another one has.
pub fn port_clash<'a>(
    port: &PublishedPort,
    planned: &[PublishedPort],
    others: impl IntoIterator<Item = Publisher<'a>>,
) -> Result<()> {
    if let Some(clash) = planned.iter().find(|p| p.clashes_with(port)) {
        return Err(Error::conflict(format!("{port} clashes with {clash}")));
    }
    for (kind, name, ports) in others {
        if let Some(clash) = ports.iter().find(|p| p.clashes_with(port)) {
            return Err(Error::conflict(format!(
                "cannot publish {port}: {kind} {name} already publishes {clash}"
            )));
        }
    }
    Ok(())
}

/// What publishes host ports: ("sandbox" or "port", its name, its published ports).
pub type Publisher<'a> = (&'static str, &'a str, &'a [PublishedPort]);

/// Sandboxes as publishers.
pub fn sandbox_publishers<S: std::borrow::Borrow<Sandbox>>(
    sandboxes: &[S],
) -> impl Iterator<Item = Publisher<'_>> {
    sandboxes.iter().map(|s| {
        let s = s.borrow();
        ("sandbox", s.name.as_str(), s.ports.as_slice())
    })
}

/// Every publisher of the state: sandboxes and VM ports.
pub fn publishers(state: &State) -> impl Iterator<Item = Publisher<'_>> {
    let ports = state
        .vm_ports
        .iter()
        .map(|p| ("port", p.name.as_str(), p.ports.as_slice()));
    sandbox_publishers(&state.sandboxes).chain(ports)
}

/// A loaded state checked (`state`), its networks given their typed options.
pub fn load(state: &mut State) -> std::result::Result<(), String> {
    let typed = self::state(state)?;
    for (net, typed) in state.networks.iter_mut().zip(typed) {
        net.typed = Some(typed);
    }
    Ok(())
}

/// Every object of a loaded state, checked as the API checked it when it was made, and in
/// context: names and addresses unique, endpoints on networks that exist. The error names the
/// object and the field. Returns each network's options, typed, in order.
pub fn state(state: &State) -> std::result::Result<Vec<NetOptions>, String> {
    let mut typed = Vec::with_capacity(state.networks.len());
    for (i, net) in state.networks.iter().enumerate() {
        typed.push(
            network(net, &state.networks[..i])
                .map_err(|e| format!("network {:?}: {e}", net.name))?,
        );
    }
    // Addresses taken per network, with who took them.
    let mut taken: HashMap<(String, IpAddr), String> = HashMap::new();
    // Names seen, in a set: 10,000 sandboxes are checked at every start.
    let mut names = HashSet::with_capacity(state.sandboxes.len());
    for (i, sb) in state.sandboxes.iter().enumerate() {
        if !names.insert(sb.name.as_str()) {
            return Err(format!("sandbox {:?}: is listed twice", sb.name));
        }
        sandbox(state, sb, &state.sandboxes[..i], &mut taken)
            .map_err(|e| format!("sandbox {:?}: {e}", sb.name))?;
    }
    for (i, a) in state.cni.iter().enumerate() {
        cni(state, a, &state.cni[..i], &mut taken)
            .map_err(|e| format!("CNI attachment {:?}/{:?}: {e}", a.container_id, a.ifname))?;
    }
    for (i, p) in state.vm_ports.iter().enumerate() {
        vm_port(state, p, &state.vm_ports[..i], &mut taken)
            .map_err(|e| format!("port {:?}: {e}", p.name))?;
    }
    for (i, p) in state.docker_plugins.iter().enumerate() {
        docker_plugin(state, p, &state.docker_plugins[..i])
            .map_err(|e| format!("docker plugin {:?}: {e}", p.name))?;
    }
    if let Some(ula) = state.ula {
        ula_pool(ula).map_err(|e| format!("ula: {e}"))?;
    }
    use crate::control::request_log;
    if state.committed_requests.len() > request_log::KEPT {
        return Err(format!(
            "committed_requests: {} ids, at most {}",
            state.committed_requests.len(),
            request_log::KEPT
        ));
    }
    if let Some(bad) = state
        .committed_requests
        .iter()
        .find(|id| !request_log::valid_id(id))
    {
        return Err(format!("committed_requests: invalid request id {bad:?}"));
    }
    Ok(typed)
}

fn network(net: &Network, earlier: &[Network]) -> Result<NetOptions> {
    validate_name("network", &net.name).map_err(Error::Invalid)?;
    if earlier.iter().any(|n| n.name == net.name) {
        return Err(Error::invalid("is listed twice"));
    }
    if net.builtin && !BUILTIN.iter().any(|(name, _)| *name == net.name) {
        let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
        return Err(Error::invalid(format!(
            "only {} are built in",
            names.join(", ")
        )));
    }
    mtu(net.mtu)?;
    crate::control::policy::check_rules(net)?;
    let imp = drivers::of(net.driver);
    let typed = imp.validate(&net.options)?;
    let aging = typed.mac_aging_s;
    if aging != net.mac_aging_s {
        return Err(Error::invalid(format!(
            "mac_aging_s {} is not what its options give ({aging})",
            net.mac_aging_s
        )));
    }
    match (imp.plugin_served(), &net.plugin) {
        (true, Some(p)) => validate_name("plugin", p).map_err(Error::Invalid)?,
        (true, None) => return Err(Error::invalid("a remote network names no plugin")),
        (false, Some(p)) => {
            return Err(Error::invalid(format!(
                "plugin {p:?} on a network of driver {}",
                net.driver.name()
            )));
        }
        (false, None) => {}
    }
    match (imp.has_vni(), net.vni) {
        (true, Some(v)) => {
            vni(v)?;
            if let Some(other) = earlier.iter().find(|n| n.vni == Some(v)) {
                return Err(Error::conflict(format!(
                    "VNI {v} is taken by network {}",
                    other.name
                )));
            }
        }
        (true, None) => return Err(Error::invalid("an overlay network has no VNI")),
        (false, Some(v)) => {
            return Err(Error::invalid(format!(
                "VNI {v} on a network of driver {}",
                net.driver.name()
            )));
        }
        (false, None) => {}
    }
    if imp.addressed() {
        match (net.subnet, net.gateway) {
            (Some(subnet), Some(gateway)) => {
                let others: Vec<(String, Ipv4Net)> = earlier
                    .iter()
                    .filter_map(|n| n.subnet.map(|s| (n.name.clone(), s)))
                    .collect();
                ipam::plan_network(subnet, Some(gateway), net.ip_range, &others)?;
            }
            // IPv6-only: no IPv4 side at all.
            (None, None) if net.ip_range.is_none() && net.subnet6.is_some() => {}
            _ => return Err(Error::invalid("has no subnet and gateway")),
        }
        match (net.subnet6, net.gateway6) {
            (Some(subnet), Some(gateway)) => {
                if !imp.switched() {
                    return Err(Error::invalid(format!(
                        "an IPv6 subnet on a network of driver {}",
                        net.driver.name()
                    )));
                }
                let others: Vec<(String, Ipv6Net)> = earlier
                    .iter()
                    .filter_map(|n| n.subnet6.map(|s| (n.name.clone(), s)))
                    .collect();
                ipam6::plan_network(subnet, Some(gateway), &others)?;
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid("has only one of subnet6 and gateway6"));
            }
        }
    } else if net.subnet.is_some()
        || net.gateway.is_some()
        || net.ip_range.is_some()
        || net.subnet6.is_some()
        || net.gateway6.is_some()
    {
        return Err(Error::invalid(format!(
            "a network of driver {} has no addresses",
            net.driver.name()
        )));
    }
    Ok(typed)
}

/// The daemon's ULA pool: a /48 of fd00::/8, as `ipam6::random_ula` picks them.
fn ula_pool(ula: Ipv6Net) -> Result<()> {
    if ula.prefix != 48 || ula.addr != ula.network() || ula.addr.octets()[0] != 0xfd {
        return Err(Error::invalid(format!(
            "{ula} is not a ULA /48 (fdXX:XXXX:XXXX::/48)"
        )));
    }
    Ok(())
}

fn unicast(mac: MacAddr) -> Result<()> {
    if mac.is_zero() || mac.is_multicast() {
        return Err(Error::invalid(format!(
            "MAC {mac} is not a unicast address"
        )));
    }
    Ok(())
}

/// `eth0`, `eth1`, ...: the names the daemon gives.
fn interface(name: &str) -> Result<()> {
    let ok = name
        .strip_prefix("eth")
        .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid interface name {name:?}")))
    }
}

/// Claim `ip` on `network` for `who`: an address is held by one object at a time.
fn claim(
    taken: &mut HashMap<(String, IpAddr), String>,
    network: &str,
    ip: impl Into<IpAddr>,
    who: String,
) -> Result<()> {
    let ip = ip.into();
    if let Some(owner) = taken.get(&(network.to_string(), ip)) {
        return Err(Error::conflict(format!(
            "address {ip} on network {network} is {owner}'s too"
        )));
    }
    taken.insert((network.to_string(), ip), who);
    Ok(())
}

fn sandbox(
    state: &State,
    sb: &Sandbox,
    earlier: &[std::sync::Arc<Sandbox>],
    taken: &mut HashMap<(String, IpAddr), String>,
) -> Result<()> {
    validate_name("sandbox", &sb.name).map_err(Error::Invalid)?;
    if crate::drivers::shares_host(state, sb) {
        // The host's own name: not written to any file, shown only; one line of it.
        if sb.hostname.len() > 64 || sb.hostname.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(format!(
                "invalid hostname {:?}",
                sb.hostname
            )));
        }
    } else {
        hostname(&sb.hostname)?;
    }
    let mut networks = HashSet::new();
    let mut interfaces = HashSet::new();
    for ep in &sb.endpoints {
        let Some(net) = state.network(&ep.network) else {
            return Err(Error::invalid(format!(
                "endpoint on unknown network {:?}",
                ep.network
            )));
        };
        let what = |e: Error| Error::invalid(format!("endpoint on network {}: {e}", net.name));
        if !networks.insert(ep.network.as_str()) {
            return Err(what(Error::invalid("joins it twice")));
        }
        for alias in &ep.aliases {
            validate_name("alias", alias).map_err(|e| what(Error::Invalid(e)))?;
        }
        for partner in &ep.blocked {
            validate_name("sandbox", partner).map_err(|e| what(Error::Invalid(e)))?;
        }
        if let Some(imp) = &ep.impairment {
            imp.validate().map_err(|e| what(Error::Invalid(e)))?;
        }
        if drivers::of(net.driver).addressed() {
            endpoint_link(sb, net, ep, &mut interfaces, taken).map_err(what)?;
        } else {
            if ep.interface.is_some() || ep.mac.is_some() || ep.ipv4.is_some() || ep.ipv6.is_some()
            {
                return Err(what(Error::invalid(format!(
                    "a network of driver {} gives no interface or address",
                    net.driver.name()
                ))));
            }
            if sb.endpoints.len() > 1 {
                return Err(what(Error::invalid(format!(
                    "driver {} cannot be combined with other networks",
                    net.driver.name()
                ))));
            }
        }
    }
    let mut planned = Vec::new();
    for port in &sb.ports {
        published(state, sb, port)?;
        port_clash(port, &planned, sandbox_publishers(earlier))?;
        planned.push(port.clone());
    }
    Ok(())
}

/// The interface, MAC and address of an endpoint on a network tapnet addresses.
fn endpoint_link(
    sb: &Sandbox,
    net: &Network,
    ep: &super::model::Endpoint,
    interfaces: &mut HashSet<String>,
    taken: &mut HashMap<(String, IpAddr), String>,
) -> Result<()> {
    let (Some(ifname), Some(mac)) = (&ep.interface, ep.mac) else {
        return Err(Error::invalid("has no interface, MAC or address"));
    };
    interface(ifname)?;
    if !interfaces.insert(ifname.clone()) {
        return Err(Error::invalid(format!("interface {ifname} is used twice")));
    }
    unicast(mac)?;
    let who = format!("sandbox {}", sb.name);
    addresses(net, (ep.ipv4, ep.ipv6), true, taken, who)
}

/// Each family the network has, an endpoint (or CNI attachment, or Docker endpoint) has a host
/// address of, not claimed by another, and no address of a family the network lacks. Docker
/// endpoints made before tapnet picked IPv6 addresses for them may lack one (`ipv6_required`).
fn addresses(
    net: &Network,
    (ipv4, ipv6): (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
    ipv6_required: bool,
    taken: &mut HashMap<(String, IpAddr), String>,
    who: String,
) -> Result<()> {
    match (net.subnet.zip(net.gateway), ipv4) {
        (Some((subnet, gateway)), Some(ip)) => {
            ipam::allocate(subnet, gateway, None, &HashSet::new(), Some(ip))?;
            claim(taken, &net.name, ip, who.clone())?;
        }
        (None, None) => {}
        (Some(_), None) => return Err(Error::invalid("has no IPv4 address")),
        (None, Some(ip)) => {
            return Err(Error::invalid(format!(
                "address {ip}: the network has no IPv4 subnet"
            )));
        }
    }
    match (net.subnet6.zip(net.gateway6), ipv6) {
        (Some((subnet, gateway)), Some(ip)) => {
            ipam6::allocate(subnet, gateway, &HashSet::new(), Some(ip))?;
            claim(taken, &net.name, ip, who)
        }
        (None, None) => Ok(()),
        (Some(_), None) if !ipv6_required => Ok(()),
        (Some(_), None) => Err(Error::invalid("has no IPv6 address")),
        (None, Some(ip)) => Err(Error::invalid(format!(
            "address {ip}: the network has no IPv6 subnet"
        ))),
    }
}

/// A published port: carried by a non-internal switched network the sandbox is on.
fn published(state: &State, sb: &Sandbox, port: &PublishedPort) -> Result<()> {
    if port.host_port == 0 || port.port == 0 {
        return Err(Error::invalid(format!("published port {port}: port 0")));
    }
    let carrier = state
        .network(&port.network)
        .filter(|n| drivers::of(n.driver).publishes_ports() && !n.internal);
    if carrier.is_none() || sb.endpoint(&port.network).is_none() {
        return Err(Error::invalid(format!(
            "published port {port}: network {:?} is not a non-internal bridge network of the sandbox",
            port.network
        )));
    }
    Ok(())
}

fn cni(
    state: &State,
    a: &CniAttachment,
    earlier: &[CniAttachment],
    taken: &mut HashMap<(String, IpAddr), String>,
) -> Result<()> {
    crate::cni::validate_container_id(&a.container_id).map_err(Error::invalid)?;
    if !a.netns.starts_with('/') {
        return Err(Error::invalid("needs an absolute namespace path"));
    }
    cni_ifname(&a.ifname)?;
    if earlier
        .iter()
        .any(|e| e.container_id == a.container_id && e.ifname == a.ifname)
    {
        return Err(Error::invalid("is listed twice"));
    }
    let net = state
        .network(&a.network)
        .filter(|n| drivers::of(n.driver).takes_taps())
        .ok_or_else(|| {
            Error::invalid(format!("network {:?} is not a bridge network", a.network))
        })?;
    if net.gateway.is_none() && net.gateway6.is_none() {
        return Err(Error::invalid("the network has no subnet"));
    }
    unicast(a.mac)?;
    let who = format!("CNI container {}", a.container_id);
    addresses(net, (a.ipv4, a.ipv6), true, taken, who)
}

/// A VM's port: a name no sandbox or other port has, an absolute socket path of its own, a
/// bridge network's addresses as an endpoint's.
pub fn vm_port(
    state: &State,
    p: &super::model::VmPort,
    earlier: &[super::model::VmPort],
    taken: &mut HashMap<(String, IpAddr), String>,
) -> Result<()> {
    validate_name("port", &p.name).map_err(Error::Invalid)?;
    if earlier.iter().any(|e| e.name == p.name) {
        return Err(Error::invalid("is listed twice"));
    }
    if state.sandbox(&p.name).is_some() {
        return Err(Error::invalid("a sandbox has the same name"));
    }
    match p.kind {
        super::model::VmPortKind::QemuSocket | super::model::VmPortKind::VhostUser => {
            vm_port_path(&p.path)?
        }
        super::model::VmPortKind::Iface => crate::cni::validate_ifname(&p.path)
            .map_err(|e| Error::invalid(format!("interface {:?}: {e}", p.path)))?,
    }
    if earlier
        .iter()
        .any(|e| e.path == p.path && e.kind.is_socket() == p.kind.is_socket())
    {
        return Err(Error::invalid(format!("path {} is another port's", p.path)));
    }
    let net = state
        .network(&p.network)
        .filter(|n| drivers::of(n.driver).takes_taps())
        .ok_or_else(|| {
            Error::invalid(format!("network {:?} is not a bridge network", p.network))
        })?;
    if net.gateway.is_none() && net.gateway6.is_none() {
        return Err(Error::invalid("the network has no subnet"));
    }
    unicast(p.mac)?;
    for partner in &p.blocked {
        validate_name("sandbox", partner).map_err(Error::Invalid)?;
    }
    if let Some(imp) = &p.impairment {
        imp.validate().map_err(Error::Invalid)?;
    }
    let mut planned = Vec::new();
    for port in &p.ports {
        if port.host_port == 0 || port.port == 0 {
            return Err(Error::invalid(format!("published port {port}: port 0")));
        }
        if port.network != p.network || net.internal {
            return Err(Error::invalid(format!(
                "published port {port}: network {:?} is not the port's, or is internal",
                port.network
            )));
        }
        let earlier_ports = earlier
            .iter()
            .map(|e| ("port", e.name.as_str(), e.ports.as_slice()));
        port_clash(
            port,
            &planned,
            sandbox_publishers(&state.sandboxes).chain(earlier_ports),
        )?;
        planned.push(port.clone());
    }
    addresses(
        net,
        (p.ipv4, p.ipv6),
        true,
        taken,
        format!("port {}", p.name),
    )
}

/// A socket path a port may listen on: absolute, no `..`, no NUL, short enough for sun_path.
pub fn vm_port_path(path: &str) -> Result<()> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(Error::invalid(format!(
            "socket path {path:?} is not absolute"
        )));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) || path.contains('\0') {
        return Err(Error::invalid(format!(
            "socket path {path:?} has '..' or NUL"
        )));
    }
    // sun_path holds 108 bytes with the terminating NUL.
    if path.len() > 107 {
        return Err(Error::invalid(format!(
            "socket path {path:?} is longer than 107 bytes"
        )));
    }
    Ok(())
}

fn docker_plugin(state: &State, p: &DockerPlugin, earlier: &[DockerPlugin]) -> Result<()> {
    validate_name("plugin", &p.name).map_err(Error::Invalid)?;
    if earlier.iter().any(|e| e.name == p.name) {
        return Err(Error::invalid("is listed twice"));
    }
    for network in p.networks.values() {
        if state.network(network).is_none() {
            return Err(Error::invalid(format!("unknown network {network:?}")));
        }
    }
    // As dockerd's CreateEndpoint is checked: a host address of the subnet, not the gateway,
    // not another Docker endpoint's.
    let mut taken = HashMap::new();
    for (id, ep) in &p.endpoints {
        let what = |e: String| Error::invalid(format!("endpoint {id:?}: {e}"));
        let net = state
            .network(&ep.network)
            .ok_or_else(|| what(format!("unknown network {:?}", ep.network)))?;
        if net.gateway.is_none() && net.gateway6.is_none() {
            return Err(what(format!("network {} has no subnet", net.name)));
        }
        let who = format!("Docker endpoint {id}");
        addresses(net, (ep.ipv4, ep.ipv6), false, &mut taken, who)
            .map_err(|e| what(e.to_string()))?;
        if let Some(tap) = &ep.tap {
            let ok = tap
                .strip_prefix("tn")
                .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(what(format!("invalid TAP name {tap:?}")));
            }
        }
        if let Some(key) = &ep.sandbox_key
            && !key.starts_with('/')
        {
            return Err(what(format!("sandbox key {key:?} is not an absolute path")));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hostnames_are_labels_without_spaces_or_newlines() {
        for good in ["a", "web-1", "alpha.example", "x1.y2.z3"] {
            assert!(hostname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "x\n10.0.0.1 evil",
            "a b",
            "a\tb",
            "-a",
            "a-",
            "a..b",
            "a_b",
            &"a".repeat(65),
        ] {
            let err = hostname(bad).unwrap_err().to_string();
            assert!(err.contains("invalid hostname"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mtu_vni_and_interface_ranges() {
        assert!(mtu(MIN_MTU).is_ok() && mtu(MAX_MTU).is_ok());
        assert!(mtu(MIN_MTU - 1).is_err() && mtu(MAX_MTU + 1).is_err());
        assert!(vni(1).is_ok() && vni(MAX_VNI).is_ok());
        assert!(vni(0).is_err() && vni(MAX_VNI + 1).is_err());
        assert!(interface("eth0").is_ok() && interface("eth12").is_ok());
        for bad in ["", "eth", "eth-1", "lo", "eth0/../x", "eth123456"] {
            assert!(interface(bad).is_err(), "{bad}");
        }
        assert!(cni_ifname("net1").is_ok());
        assert!(cni_ifname("a/b").is_err() && cni_ifname("").is_err());
        assert!(cni_ifname("abcdefghijklmnop").is_err());
    }

    /// Bridge network `n` (10.61.0.0/24) and sandbox `a` on it, as the API makes them.
    pub(crate) fn world() -> State {
        let json = serde_json::json!({
            "version": 1,
            "networks": [
                {"name": "bridge", "id": "1", "driver": "bridge", "subnet": "172.17.0.0/16",
                 "gateway": "172.17.0.1", "ip_range": null, "internal": false, "mtu": 1500,
                 "vni": null, "mac_aging_s": 300, "options": {}, "builtin": true},
                {"name": "none", "id": "2", "driver": "null", "subnet": null, "gateway": null,
                 "ip_range": null, "internal": false, "mtu": 1500, "vni": null,
                 "mac_aging_s": 300, "options": {}, "builtin": true},
                {"name": "n", "id": "3", "driver": "bridge", "subnet": "10.61.0.0/24",
                 "gateway": "10.61.0.1", "ip_range": null, "internal": false, "mtu": 1500,
                 "vni": null, "mac_aging_s": 300, "options": {}, "builtin": false}
            ],
            "sandboxes": [
                {"name": "a", "id": "4", "hostname": "a", "ports": [
                    {"host_ip": null, "host_port": 8080, "port": 80, "protocol": "tcp",
                     "network": "n"}],
                 "endpoints": [{"id": "5", "network": "n", "interface": "eth0",
                    "mac": "0a:58:0a:3d:00:02", "ipv4": "10.61.0.2", "aliases": ["web"]}]}
            ]
        });
        serde_json::from_value(json).unwrap()
    }

    fn refused(edit: impl Fn(&mut State), want: &str) {
        let mut s = world();
        edit(&mut s);
        let err = state(&s).unwrap_err();
        assert!(err.contains(want), "{err} does not say {want}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn a_state_the_api_made_passes() {
        state(&world()).unwrap();
    }

    #[test]
    fn policy_rules_are_checked_on_load() {
        use crate::control::policy::{Action, PolicyRule};
        let rule = |name: &str, to: &str| PolicyRule {
            name: name.into(),
            from: None,
            to: Some(to.into()),
            proto: crate::datapath::policy::Proto::Any,
            port: None,
            action: Action::Deny,
        };
        let mut ok = world();
        ok.networks[2].policy = vec![rule("r1", "web"), rule("r2", "10.0.0.0/8")];
        state(&ok).unwrap();
        refused(
            |s| s.networks[2].policy = vec![rule("r1", "a"), rule("r1", "a")],
            "policy rule r1 is listed twice",
        );
        refused(
            |s| s.networks[2].policy = vec![rule("r1", "10.0.0.0/99")],
            "bad prefix length",
        );
        refused(
            |s| s.networks[1].policy = vec![rule("r1", "a")],
            "policy rules on a network of driver null",
        );
    }

    #[test]
    fn every_field_is_checked_on_load() {
        refused(
            |s| {
                s.sandboxes
                    .edit(0, |sb| sb.hostname = "x\n10.0.0.1 evil".into())
            },
            r#"sandbox "a": invalid hostname "x\n10.0.0.1 evil""#,
        );
        refused(
            |s| {
                s.sandboxes.edit(0, |sb| {
                    sb.endpoints[0].ipv4 = Some("10.99.0.5".parse().unwrap())
                })
            },
            "10.99.0.5 is not a usable address of subnet 10.61.0.0/24",
        );
        refused(
            |s| {
                s.sandboxes.edit(0, |sb| {
                    sb.endpoints[0].ipv4 = Some("10.61.0.1".parse().unwrap())
                })
            },
            "is the network's gateway",
        );
        refused(
            |s| s.sandboxes.push(s.sandboxes[0].clone()),
            r#"sandbox "a": is listed twice"#,
        );
        refused(
            |s| {
                let mut b = (*s.sandboxes[0]).clone();
                b.name = "b".into();
                b.ports.clear();
                s.sandboxes.push(Arc::new(b));
            },
            "address 10.61.0.2 on network n is sandbox a's too",
        );
        refused(
            |s| {
                let mut b = (*s.sandboxes[0]).clone();
                b.name = "b".into();
                b.endpoints[0].ipv4 = Some("10.61.0.3".parse().unwrap());
                s.sandboxes.push(Arc::new(b));
            },
            "sandbox a already publishes",
        );
        refused(
            |s| s.networks[2].subnet = Some("224.1.0.0/16".parse().unwrap()),
            r#"network "n": subnet 224.1.0.0/16 lies in 224.0.0.0/4 (multicast)"#,
        );
        refused(
            |s| s.networks[2].subnet = Some("127.0.0.0/24".parse().unwrap()),
            "loopback",
        );
        refused(
            |s| s.networks[2].subnet = Some("172.17.5.0/24".parse().unwrap()),
            "overlaps 172.17.0.0/16 of network bridge",
        );
        refused(
            |s| s.networks[2].gateway = Some("10.62.0.1".parse().unwrap()),
            "gateway 10.62.0.1 is not a usable address",
        );
        refused(|s| s.networks[2].mtu = 10, "MTU 10 is out of range");
        refused(
            |s| s.networks[2].vni = Some(5),
            "VNI 5 on a network of driver bridge",
        );
        refused(
            |s| {
                s.networks[2].driver = drivers::named("overlay").unwrap();
                s.networks[2].vni = Some(1 << 24);
            },
            "VNI 16777216 is out of range",
        );
        refused(
            |s| {
                s.networks[2].options.insert("colour".into(), "blue".into());
            },
            "unknown option colour",
        );
        refused(
            |s| s.networks.push(s.networks[2].clone()),
            r#"network "n": is listed twice"#,
        );
        refused(
            |s| s.networks[2].name = "../x".into(),
            "invalid network name",
        );
        refused(
            |s| {
                s.sandboxes.edit(0, |sb| {
                    sb.endpoints[0].mac = Some("01:00:5e:00:00:01".parse().unwrap())
                })
            },
            "not a unicast address",
        );
        refused(
            |s| {
                s.sandboxes
                    .edit(0, |sb| sb.endpoints[0].interface = Some("eth0/../x".into()))
            },
            "invalid interface name",
        );
        refused(
            |s| {
                s.sandboxes
                    .edit(0, |sb| sb.endpoints[0].aliases = vec!["a b".into()])
            },
            "invalid alias name",
        );
        refused(
            |s| {
                let ep = s.sandboxes[0].endpoints[0].clone();
                s.sandboxes.edit(0, |sb| sb.endpoints.push(ep))
            },
            "joins it twice",
        );
        refused(
            |s| {
                s.sandboxes
                    .edit(0, |sb| sb.endpoints[0].network = "gone".into())
            },
            r#"endpoint on unknown network "gone""#,
        );
        refused(|s| s.sandboxes.edit(0, |sb| sb.ports[0].port = 0), "port 0");
        refused(
            |s| {
                s.sandboxes
                    .edit(0, |sb| sb.ports[0].network = "bridge".into())
            },
            "is not a non-internal bridge network of the sandbox",
        );
    }

    /// `world` with network `n` dual-stack (fd00:61::/64) and `a` addressed on it.
    fn dual() -> State {
        let mut s = world();
        s.networks[2].subnet6 = Some("fd00:61::/64".parse().unwrap());
        s.networks[2].gateway6 = Some("fd00:61::1".parse().unwrap());
        s.sandboxes.edit(0, |sb| {
            sb.endpoints[0].ipv6 = Some("fd00:61::2".parse().unwrap())
        });
        s.ula = Some("fd12:3456:789a::/48".parse().unwrap());
        s
    }

    fn refused_dual(edit: impl Fn(&mut State), want: &str) {
        let mut s = dual();
        edit(&mut s);
        let err = state(&s).unwrap_err();
        assert!(err.contains(want), "{err} does not say {want}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn ipv6_fields_are_checked_on_load() {
        state(&dual()).unwrap();
        let mut only = dual();
        (only.networks[2].subnet, only.networks[2].gateway) = (None, None);
        only.sandboxes.edit(0, |sb| sb.endpoints[0].ipv4 = None);
        only.sandboxes.edit(0, |sb| sb.ports.clear());
        state(&only).unwrap();
        refused_dual(
            |s| s.networks[2].subnet6 = Some("fe80::/64".parse().unwrap()),
            "link-local",
        );
        refused_dual(
            |s| s.networks[2].gateway6 = None,
            "only one of subnet6 and gateway6",
        );
        refused_dual(
            |s| {
                s.networks[0].subnet6 = Some("fd00:61::/80".parse().unwrap());
                s.networks[0].gateway6 = Some("fd00:61::1".parse().unwrap());
            },
            "overlaps fd00:61::/80 of network bridge",
        );
        refused_dual(
            |s| s.networks[1].subnet6 = Some("fd00:99::/64".parse().unwrap()),
            "has no addresses",
        );
        refused_dual(
            |s| {
                s.sandboxes.edit(0, |sb| {
                    sb.endpoints[0].ipv6 = Some("fd00:62::2".parse().unwrap())
                })
            },
            "not a usable address of subnet fd00:61::/64",
        );
        refused_dual(
            |s| s.sandboxes.edit(0, |sb| sb.endpoints[0].ipv6 = None),
            "has no IPv6 address",
        );
        refused_dual(
            |s| {
                let mut b = (*s.sandboxes[0]).clone();
                b.name = "b".into();
                b.ports.clear();
                b.endpoints[0].ipv4 = Some("10.61.0.3".parse().unwrap());
                s.sandboxes.push(Arc::new(b));
            },
            "address fd00:61::2 on network n is sandbox a's too",
        );
        refused_dual(|s| s.ula = Some("fd12::/64".parse().unwrap()), "ula:");
        refused_dual(|s| s.ula = Some("2001:db9::/48".parse().unwrap()), "ula:");
        refused(
            |s| {
                s.sandboxes.edit(0, |sb| {
                    sb.endpoints[0].ipv6 = Some("fd00:61::2".parse().unwrap())
                })
            },
            "the network has no IPv6 subnet",
        );
    }

    #[test]
    fn cni_attachments_have_an_address_of_each_family_of_their_network() {
        let attach = |ipv4: Option<&str>, ipv6: Option<&str>| CniAttachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/c1".into(),
            network: "n".into(),
            ipv4: ipv4.map(|a| a.parse().unwrap()),
            ipv6: ipv6.map(|a| a.parse().unwrap()),
            mac: "02:42:0a:3d:00:09".parse().unwrap(),
        };
        let mut s = dual();
        s.cni.push(attach(Some("10.61.0.9"), Some("fd00:61::9")));
        state(&s).unwrap();
        refused_dual(
            |s| s.cni.push(attach(None, Some("fd00:61::9"))),
            "has no IPv4 address",
        );
        refused_dual(
            |s| s.cni.push(attach(Some("10.61.0.9"), Some("fd00:61::2"))),
            "address fd00:61::2 on network n is sandbox a's too",
        );
        let mut only = dual();
        (only.networks[2].subnet, only.networks[2].gateway) = (None, None);
        only.sandboxes.clear();
        only.cni.push(attach(None, Some("fd00:61::9")));
        state(&only).unwrap();
        only.cni[0].ipv4 = Some("10.61.0.9".parse().unwrap());
        let err = state(&only).unwrap_err();
        assert!(err.contains("the network has no IPv4 subnet"), "{err}");
    }

    #[test]
    fn vm_ports_are_checked_like_endpoints_and_own_their_name_and_path() {
        use crate::control::model::{VmPort, VmPortKind};
        let port = VmPort {
            name: "vm1".into(),
            network: "n".into(),
            kind: VmPortKind::QemuSocket,
            path: "/run/vm1.sock".into(),
            mac: "02:42:0a:3d:00:09".parse().unwrap(),
            ipv4: Some("10.61.0.9".parse().unwrap()),
            ipv6: Some("fd00:61::9".parse().unwrap()),
            was_down: false,
            impairment: None,
            blocked: Vec::new(),
            ports: Vec::new(),
        };
        let mut s = dual();
        s.vm_ports.push(port.clone());
        state(&s).unwrap();
        let with = |edit: fn(&mut VmPort)| {
            let mut p = port.clone();
            edit(&mut p);
            move |s: &mut State| s.vm_ports.push(p.clone())
        };
        refused_dual(with(|p| p.ipv6 = None), "has no IPv6 address");
        refused_dual(
            with(|p| p.ipv6 = Some("fd00:61::2".parse().unwrap())),
            "address fd00:61::2 on network n is sandbox a's too",
        );
        refused_dual(with(|p| p.path = "vm.sock".into()), "is not absolute");
        refused_dual(with(|p| p.path = "/run/../vm.sock".into()), "'..'");
        refused_dual(with(|p| p.name = "a".into()), "a sandbox has the same name");
        refused_dual(with(|p| p.network = "nope".into()), "not a bridge network");
        refused_dual(
            |s| {
                s.vm_ports.push(port.clone());
                let mut b = port.clone();
                b.name = "vm2".into();
                b.ipv4 = Some("10.61.0.10".parse().unwrap());
                b.ipv6 = Some("fd00:61::10".parse().unwrap());
                s.vm_ports.push(b);
            },
            "is another port's",
        );
    }
}
