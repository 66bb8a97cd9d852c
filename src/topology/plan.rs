//! What `tapnet up` and `tapnet down` must change: a pure function of the file, what the daemon
//! has now, and the record of what earlier `up`s of this file made. Nothing here talks to the
//! daemon, so every case is a unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{NetworkSpec, PortSpec, SandboxSpec, Topology};
use crate::api::types::{NetworkView, PortView, SandboxView};
use crate::datapath::impair::Impairment;

/// What an `up` of a file made, kept in the state dir so that `down` removes exactly that.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub networks: Vec<String>,
    pub sandboxes: Vec<String>,
    /// VMs' ports the file made (`[[port]]`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// The command started in each sandbox the file made.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// (sandbox or port, network) links the file impaired.
    #[serde(default)]
    pub links: Vec<(String, String)>,
    /// (a, b, network) blocks the file set, with a < b.
    #[serde(default)]
    pub blocks: Vec<(String, String, String)>,
}

/// What the daemon has: its answers to `network ls`, `sandbox ls` and `port ls`.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub networks: Vec<NetworkView>,
    pub sandboxes: Vec<SandboxView>,
    pub ports: Vec<PortView>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    RemoveSandbox(String),
    RemoveNetwork(String),
    CreateNetwork(NetworkSpec),
    CreateSandbox(SandboxSpec),
    RemovePort(String),
    CreatePort(PortSpec),
    /// Replace the link's impairments (a no-op impairment clears them).
    SetLink {
        sandbox: String,
        network: String,
        impairment: Impairment,
    },
    Block {
        a: String,
        b: String,
        network: String,
        block: bool,
    },
    StartCommand {
        sandbox: String,
        command: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RemoveSandbox(s) => write!(f, "remove sandbox {s}"),
            Action::RemoveNetwork(n) => write!(f, "remove network {n}"),
            Action::CreateNetwork(n) => write!(
                f,
                "create network {}{}{}{}",
                n.name,
                n.subnet
                    .as_ref()
                    .map(|s| format!(" (subnet {s})"))
                    .unwrap_or_default(),
                match (&n.subnet6, n.wants_ipv6()) {
                    (Some(s), _) => format!(" (subnet6 {s})"),
                    (None, true) => " (ipv6)".to_string(),
                    (None, false) => String::new(),
                },
                if n.internal { " internal" } else { "" }
            ),
            Action::CreateSandbox(s) => {
                let nets: Vec<String> = s
                    .networks
                    .iter()
                    .map(|n| match (s.ip.get(n), s.ip6.get(n)) {
                        (Some(ip), Some(ip6)) => format!("{n}={ip},{ip6}"),
                        (Some(ip), None) | (None, Some(ip)) => format!("{n}={ip}"),
                        (None, None) => n.clone(),
                    })
                    .collect();
                write!(f, "create sandbox {} on {}", s.name, nets.join(", "))?;
                if !s.publish.is_empty() {
                    write!(f, " publishing {}", s.publish.join(", "))?;
                }
                Ok(())
            }
            Action::RemovePort(p) => write!(f, "remove port {p}"),
            Action::CreatePort(p) => {
                let addrs: Vec<&str> = [&p.ip, &p.ip6]
                    .into_iter()
                    .filter_map(|a| a.as_deref())
                    .collect();
                write!(f, "create port {} on {}", p.name, p.network)?;
                if !addrs.is_empty() {
                    write!(f, "={}", addrs.join(","))?;
                }
                if let Some((kind, path)) = p.kind() {
                    write!(f, " ({kind} {path})")?;
                }
                if let Some(mac) = &p.mac {
                    write!(f, " mac {mac}")?;
                }
                Ok(())
            }
            Action::SetLink {
                sandbox,
                network,
                impairment,
            } => {
                if impairment.is_noop() {
                    write!(f, "clear link {sandbox} {network}")
                } else {
                    write!(f, "set link {sandbox} {network}: {}", impairment.describe())
                }
            }
            Action::Block {
                a,
                b,
                network,
                block,
            } => write!(
                f,
                "{} {a} {b} on {network}",
                if *block { "block" } else { "unblock" }
            ),
            Action::StartCommand { sandbox, command } => {
                write!(f, "start in {sandbox}: {command}")
            }
        }
    }
}

fn strip_prefix(cidr: &Option<String>) -> Option<&str> {
    cidr.as_deref().map(|c| c.split('/').next().unwrap_or(c))
}

/// Does the daemon's network match what the file asks? Settings the file leaves out match
/// anything.
fn network_matches(spec: &NetworkSpec, view: &NetworkView) -> bool {
    view.driver == spec.driver.as_deref().unwrap_or("bridge")
        && spec.vni.is_none_or(|v| view.vni == Some(v))
        && spec
            .subnet
            .as_ref()
            .is_none_or(|s| view.subnet.as_ref() == Some(s))
        && spec
            .gateway
            .as_ref()
            .is_none_or(|g| view.gateway.map(|v| v.to_string()).as_ref() == Some(g))
        && spec
            .ip_range
            .as_ref()
            .is_none_or(|r| view.ip_range.as_ref() == Some(r))
        && spec.wants_ipv6() == view.subnet6.is_some()
        && spec.wants_ipv4() == view.subnet.is_some()
        && spec
            .subnet6
            .as_ref()
            .is_none_or(|s| view.subnet6.as_ref() == Some(s))
        && spec
            .gateway6
            .as_ref()
            .is_none_or(|g| view.gateway6.map(|v| v.to_string()).as_ref() == Some(g))
        && spec.internal == view.internal
        && spec.mtu.is_none_or(|m| m == view.mtu)
        && spec.offload.unwrap_or(true) == view.offload
        && spec
            .options
            .iter()
            .all(|(k, v)| view.options.get(k) == Some(v))
}

/// Does the daemon's sandbox match the file's (networks in order, addresses, ports)?
fn sandbox_matches(spec: &SandboxSpec, view: &SandboxView) -> bool {
    let nets: Vec<&String> = view.interfaces.iter().map(|i| &i.network).collect();
    let same_nets =
        nets.len() == spec.networks.len() && nets.iter().zip(&spec.networks).all(|(a, b)| *a == b);
    let addrs = spec.ip.iter().all(|(net, ip)| {
        view.interfaces
            .iter()
            .any(|i| &i.network == net && strip_prefix(&i.ipv4) == Some(ip.as_str()))
    }) && spec.ip6.iter().all(|(net, ip)| {
        view.interfaces.iter().any(|i| {
            &i.network == net
                && strip_prefix(&i.ipv6)
                    .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                    .is_some_and(|a| ip.parse() == Ok(a))
        })
    });
    same_nets
        && addrs
        && same_published(&spec.publish, &view.ports)
        && spec.hostname.as_ref().is_none_or(|h| &view.hostname == h)
}

/// Does the daemon's port match the file's (network, kind, path; the MAC and addresses the
/// file gives)?
/// Do the file's `publish` specs name exactly the published ports the daemon shows?
fn same_published(specs: &[String], have: &[String]) -> bool {
    let want: BTreeSet<String> = specs
        .iter()
        .map(|p| {
            crate::control::ports::parse(p, "")
                .map(|pp| pp.to_string())
                .unwrap_or_else(|_| p.clone())
        })
        .collect();
    want == have.iter().cloned().collect()
}

fn port_matches(spec: &PortSpec, view: &PortView) -> bool {
    let Some((kind, path)) = spec.kind() else {
        return false;
    };
    let mac = |m: &str| m.parse::<crate::wire::MacAddr>().ok();
    view.network == spec.network
        && view.kind == kind
        && view.path == path
        && same_published(&spec.publish, &view.ports)
        && spec
            .mac
            .as_deref()
            .is_none_or(|m| mac(m).is_some() && mac(m) == mac(&view.mac))
        && spec
            .ip
            .as_deref()
            .is_none_or(|ip| strip_prefix(&view.ipv4) == Some(ip))
        && spec.ip6.as_deref().is_none_or(|ip| {
            strip_prefix(&view.ipv6)
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .is_some_and(|a| ip.parse() == Ok(a))
        })
}

fn pair(a: &str, b: &str, net: &str) -> (String, String, String) {
    if a <= b {
        (a.into(), b.into(), net.into())
    } else {
        (b.into(), a.into(), net.into())
    }
}

/// The plan's lists for one kind of object the file declares (sandboxes, ports).
struct Made<'a, T> {
    remove: &'a mut Vec<String>,
    create: &'a mut Vec<T>,
    /// What the record will say the file made.
    owned: &'a mut Vec<String>,
}

impl<T: Clone> Made<'_, T> {
    /// One object of the file: made when the daemon lacks it, kept when it `matches` (None:
    /// the daemon has none), replaced when an earlier `up` of this file made it (`owned`),
    /// refused otherwise. One already being removed is made anew.
    fn reconcile(
        &mut self,
        kind: &str,
        name: &str,
        spec: &T,
        matches: Option<bool>,
        owned: bool,
    ) -> Result<(), String> {
        let removing = self.remove.iter().any(|r| r == name);
        match matches {
            None => {}
            Some(true) if !removing => {
                if owned {
                    self.owned.push(name.to_string());
                }
                return Ok(());
            }
            Some(_) if owned && !removing => self.remove.push(name.to_string()),
            Some(_) if owned => {}
            Some(_) => {
                return Err(format!(
                    "{kind} {name} exists with other settings and was not made by this file"
                ));
            }
        }
        self.create.push(spec.clone());
        self.owned.push(name.to_string());
        Ok(())
    }
}

/// Remove what an earlier `up` made (`recorded`) and the file no longer declares, if it exists.
fn remove_gone(
    recorded: &[String],
    in_file: impl Fn(&str) -> bool,
    exists: impl Fn(&str) -> bool,
    remove: &mut Vec<String>,
) {
    for name in recorded.iter().filter(|n| !in_file(n)) {
        if exists(name) && !remove.contains(name) {
            remove.push(name.clone());
        }
    }
}

/// The plan of `tapnet up`, and the record to keep once it is carried out.
pub fn plan_up(
    topo: &Topology,
    current: &Current,
    record: &Record,
) -> Result<(Vec<Action>, Record), String> {
    let net_view = |n: &str| current.networks.iter().find(|v| v.name == n);
    let sb_view = |s: &str| current.sandboxes.iter().find(|v| v.name == s);
    let port_view = |p: &str| current.ports.iter().find(|v| v.name == p);
    let mut remove_sb: Vec<String> = Vec::new();
    let mut remove_port: Vec<String> = Vec::new();
    let mut create_port: Vec<PortSpec> = Vec::new();
    let mut owned_ports: Vec<String> = Vec::new();
    let mut remove_net: Vec<String> = Vec::new();
    let mut create_net: Vec<NetworkSpec> = Vec::new();
    let mut create_sb: Vec<SandboxSpec> = Vec::new();
    let mut owned_nets: Vec<String> = Vec::new();
    let mut owned_sbs: Vec<String> = Vec::new();

    let in_file_sb = |s: &str| topo.sandboxes.iter().any(|x| x.name == s);
    let in_file_net = |n: &str| topo.networks.iter().any(|x| x.name == n);
    let in_file_port = |p: &str| topo.ports.iter().any(|x| x.name == p);
    // A network that must go (changed, or gone from the file) takes its sandboxes and ports
    // with it; they must all be the file's. Its endpoints list its ports too, by the port's
    // name (ports and sandboxes share names).
    let mut drop_network = |name: &str,
                            remove_sb: &mut Vec<String>,
                            remove_port: &mut Vec<String>|
     -> Result<(), String> {
        if let Some(v) = net_view(name) {
            for ep in &v.endpoints {
                if port_view(&ep.sandbox).is_some_and(|p| p.network == name) {
                    if !record.ports.contains(&ep.sandbox) {
                        return Err(format!(
                            "network {name} must be replaced but port {} (not made by this file) uses it",
                            ep.sandbox
                        ));
                    }
                    if !remove_port.contains(&ep.sandbox) {
                        remove_port.push(ep.sandbox.clone());
                    }
                    continue;
                }
                if !record.sandboxes.contains(&ep.sandbox) {
                    return Err(format!(
                        "network {name} must be replaced but sandbox {} (not made by this file) uses it",
                        ep.sandbox
                    ));
                }
                if !remove_sb.contains(&ep.sandbox) {
                    remove_sb.push(ep.sandbox.clone());
                }
            }
            remove_net.push(name.to_string());
        }
        Ok(())
    };
    for spec in &topo.networks {
        match net_view(&spec.name) {
            None => {
                create_net.push(spec.clone());
                owned_nets.push(spec.name.clone());
            }
            Some(v) if network_matches(spec, v) => {
                if record.networks.contains(&spec.name) {
                    owned_nets.push(spec.name.clone());
                }
            }
            Some(_) if record.networks.contains(&spec.name) => {
                drop_network(&spec.name, &mut remove_sb, &mut remove_port)?;
                create_net.push(spec.clone());
                owned_nets.push(spec.name.clone());
            }
            Some(_) => {
                return Err(format!(
                    "network {} exists with other settings and was not made by this file",
                    spec.name
                ));
            }
        }
    }
    for name in record.networks.iter().filter(|n| !in_file_net(n)) {
        // Its sandboxes are the file's or gone from it: removed below in any case.
        drop_network(name, &mut remove_sb, &mut remove_port)?;
    }
    for spec in &topo.sandboxes {
        for n in &spec.networks {
            if !in_file_net(n) && net_view(n).is_none() {
                return Err(format!(
                    "sandbox {}: no network {n} in the file or the daemon",
                    spec.name
                ));
            }
        }
        let owned = record.sandboxes.contains(&spec.name);
        let same_command = record.commands.get(&spec.name) == spec.command.as_ref();
        let kept = sb_view(&spec.name).map(|v| {
            sandbox_matches(spec, v) && (same_command || !owned && spec.command.is_none())
        });
        let mut made = Made {
            remove: &mut remove_sb,
            create: &mut create_sb,
            owned: &mut owned_sbs,
        };
        made.reconcile("sandbox", &spec.name, spec, kept, owned)?;
    }
    remove_gone(
        &record.sandboxes,
        in_file_sb,
        |s| sb_view(s).is_some(),
        &mut remove_sb,
    );
    // Ports as sandboxes: made when missing, kept when they match, replaced when the file's.
    for spec in &topo.ports {
        if !in_file_net(&spec.network) && net_view(&spec.network).is_none() {
            return Err(format!(
                "port {}: no network {} in the file or the daemon",
                spec.name, spec.network
            ));
        }
        if sb_view(&spec.name).is_some() && !remove_sb.contains(&spec.name) {
            return Err(format!(
                "port {}: a sandbox of that name exists and was not made by this file",
                spec.name
            ));
        }
        let owned = record.ports.contains(&spec.name);
        let kept = port_view(&spec.name).map(|v| port_matches(spec, v));
        let mut made = Made {
            remove: &mut remove_port,
            create: &mut create_port,
            owned: &mut owned_ports,
        };
        made.reconcile("port", &spec.name, spec, kept, owned)?;
    }
    remove_gone(
        &record.ports,
        in_file_port,
        |p| port_view(p).is_some(),
        &mut remove_port,
    );

    // Links and blocks: compare with what the surviving sandboxes and ports have; new ones have
    // none.
    let fresh =
        |s: &str| create_sb.iter().any(|c| c.name == s) || create_port.iter().any(|c| c.name == s);
    let current_link = |s: &str, n: &str| -> Impairment {
        if fresh(s) {
            return Impairment::default();
        }
        if let Some(p) = port_view(s) {
            return (p.network == n)
                .then(|| p.impairment.clone())
                .flatten()
                .unwrap_or_default();
        }
        sb_view(s)
            .and_then(|v| v.interfaces.iter().find(|i| i.network == n))
            .and_then(|i| i.impairment.clone())
            .unwrap_or_default()
    };
    let mut links = Vec::new();
    let mut link_actions = Vec::new();
    for l in &topo.links {
        let want = l.impairment()?;
        if current_link(&l.sandbox, &l.network) != want {
            link_actions.push(Action::SetLink {
                sandbox: l.sandbox.clone(),
                network: l.network.clone(),
                impairment: want,
            });
        }
        links.push((l.sandbox.clone(), l.network.clone()));
    }
    for (s, n) in &record.links {
        let kept = links.iter().any(|(ls, ln)| ls == s && ln == n);
        let alive = (sb_view(s).is_some() || port_view(s).is_some())
            && !remove_sb.contains(s)
            && !remove_port.contains(s)
            && !fresh(s);
        if !kept && alive && !current_link(s, n).is_noop() {
            link_actions.push(Action::SetLink {
                sandbox: s.clone(),
                network: n.clone(),
                impairment: Impairment::default(),
            });
        }
    }
    let port_blocks = current
        .ports
        .iter()
        .filter(|v| !fresh(&v.name) && !remove_port.contains(&v.name))
        .flat_map(|v| {
            v.blocked
                .iter()
                .map(move |other| pair(&v.name, other, &v.network))
        });
    let current_blocks: BTreeSet<(String, String, String)> = current
        .sandboxes
        .iter()
        .filter(|v| !fresh(&v.name) && !remove_sb.contains(&v.name))
        .flat_map(|v| {
            v.interfaces.iter().flat_map(move |i| {
                i.blocked
                    .iter()
                    .map(move |other| pair(&v.name, other, &i.network))
            })
        })
        .chain(port_blocks)
        .collect();
    let mut blocks: Vec<(String, String, String)> = Vec::new();
    for b in &topo.blocks {
        for n in topo.block_networks(b) {
            let p = pair(&b.a, &b.b, &n);
            if !blocks.contains(&p) {
                blocks.push(p);
            }
        }
    }
    let mut block_actions = Vec::new();
    for (a, b, n) in &blocks {
        if !current_blocks.contains(&(a.clone(), b.clone(), n.clone())) {
            block_actions.push(Action::Block {
                a: a.clone(),
                b: b.clone(),
                network: n.clone(),
                block: true,
            });
        }
    }
    for p in &record.blocks {
        if !blocks.contains(p) && current_blocks.contains(p) {
            block_actions.push(Action::Block {
                a: p.0.clone(),
                b: p.1.clone(),
                network: p.2.clone(),
                block: false,
            });
        }
    }

    let mut actions: Vec<Action> = Vec::new();
    actions.extend(remove_sb.iter().cloned().map(Action::RemoveSandbox));
    actions.extend(remove_port.into_iter().map(Action::RemovePort));
    actions.extend(remove_net.iter().cloned().map(Action::RemoveNetwork));
    actions.extend(create_net.into_iter().map(Action::CreateNetwork));
    actions.extend(create_sb.iter().cloned().map(Action::CreateSandbox));
    // After the networks (they join one) and before the links (which may name them).
    actions.extend(create_port.into_iter().map(Action::CreatePort));
    actions.extend(link_actions);
    actions.extend(block_actions);
    for s in &create_sb {
        if let Some(command) = &s.command {
            actions.push(Action::StartCommand {
                sandbox: s.name.clone(),
                command: command.clone(),
            });
        }
    }
    let next = Record {
        commands: topo
            .sandboxes
            .iter()
            .filter(|s| owned_sbs.contains(&s.name))
            .filter_map(|s| Some((s.name.clone(), s.command.clone()?)))
            .collect(),
        networks: owned_nets,
        sandboxes: owned_sbs,
        ports: owned_ports,
        links,
        blocks,
    };
    Ok((actions, next))
}

/// The plan of `tapnet down`: what the record says the file made and still exists.
pub fn plan_down(current: &Current, record: &Record) -> Vec<Action> {
    let sb_alive = |s: &str| current.sandboxes.iter().any(|v| v.name == s);
    let port_alive = |p: &str| current.ports.iter().any(|v| v.name == p);
    let mut actions = Vec::new();
    // Links of what the file did not make are cleared; its own go with them.
    for (s, n) in &record.links {
        if !record.sandboxes.contains(s)
            && !record.ports.contains(s)
            && (sb_alive(s) || port_alive(s))
        {
            actions.push(Action::SetLink {
                sandbox: s.clone(),
                network: n.clone(),
                impairment: Impairment::default(),
            });
        }
    }
    let made = |s: &String| record.sandboxes.contains(s) || record.ports.contains(s);
    let alive = |s: &str| sb_alive(s) || port_alive(s);
    for (a, b, n) in &record.blocks {
        if !(made(a) || made(b)) && alive(a) && alive(b) {
            actions.push(Action::Block {
                a: a.clone(),
                b: b.clone(),
                network: n.clone(),
                block: false,
            });
        }
    }
    for s in record.sandboxes.iter().filter(|s| sb_alive(s)) {
        actions.push(Action::RemoveSandbox(s.clone()));
    }
    for p in record.ports.iter().filter(|p| port_alive(p)) {
        actions.push(Action::RemovePort(p.clone()));
    }
    for n in &record.networks {
        if current.networks.iter().any(|v| &v.name == n) {
            actions.push(Action::RemoveNetwork(n.clone()));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{EndpointView, InterfaceView};

    const FILE: &str = r#"
[[network]]
name = "front"
subnet = "10.70.0.0/24"

[[network]]
name = "back"
subnet = "10.71.0.0/24"
internal = true

[[sandbox]]
name = "web"
networks = ["front", "back"]
ip = { front = "10.70.0.2" }
command = "sleep 1000"

[[sandbox]]
name = "db"
networks = ["back"]

[[link]]
sandbox = "db"
network = "back"
delay = "20ms"

[[block]]
a = "web"
b = "db"
"#;

    fn topo(text: &str) -> Topology {
        Topology::parse(text, "t").expect("valid file")
    }

    /// The daemon's state after carrying out `actions` from `current` (a small simulation:
    /// addresses allocated from .2 in order, as the daemon would).
    fn simulate(current: &Current, actions: &[Action]) -> Current {
        let mut c = current.clone();
        for a in actions {
            match a {
                Action::RemoveSandbox(s) => {
                    c.sandboxes.retain(|v| &v.name != s);
                    for n in c.networks.iter_mut() {
                        n.endpoints.retain(|e| &e.sandbox != s);
                    }
                    for v in c.sandboxes.iter_mut() {
                        for i in v.interfaces.iter_mut() {
                            i.blocked.retain(|b| b != s);
                        }
                    }
                }
                Action::RemoveNetwork(n) => {
                    // The daemon refuses a network with endpoints.
                    assert!(
                        c.networks
                            .iter()
                            .all(|v| &v.name != n || v.endpoints.is_empty()),
                        "network {n} removed with endpoints"
                    );
                    c.networks.retain(|v| &v.name != n)
                }
                Action::RemovePort(p) => {
                    c.ports.retain(|v| &v.name != p);
                    for n in c.networks.iter_mut() {
                        n.endpoints.retain(|e| &e.sandbox != p);
                    }
                }
                Action::CreatePort(spec) => {
                    let net = c
                        .networks
                        .iter_mut()
                        .find(|v| v.name == spec.network)
                        .expect("net");
                    let ip = spec.ip.clone().unwrap_or_else(|| {
                        let base = net.subnet.clone().unwrap_or_default();
                        let prefix: Vec<&str> = base.split('.').take(3).collect();
                        format!("{}.{}", prefix.join("."), net.endpoints.len() + 10)
                    });
                    let (kind, path) = spec.kind().expect("one kind");
                    net.endpoints.push(EndpointView {
                        sandbox: spec.name.clone(),
                        interface: None,
                        mac: None,
                        ipv4: Some(format!("{ip}/24")),
                        ipv6: None,
                        aliases: vec![],
                        plugin_info: None,
                        container_id: None,
                        netns: None,
                        kind: Some(kind.to_string()),
                    });
                    c.ports.push(PortView {
                        name: spec.name.clone(),
                        network: spec.network.clone(),
                        kind: kind.to_string(),
                        path: path.to_string(),
                        io: None,
                        mac: spec
                            .mac
                            .clone()
                            .unwrap_or_else(|| "02:42:0a:46:00:09".into()),
                        ipv4: Some(format!("{ip}/24")),
                        ipv6: None,
                        connected: false,
                        connections: 0,
                        to_vm_dropped: 0,
                        to_vm_absent: 0,
                        impairment: None,
                        blocked: Vec::new(),
                        ports: spec
                            .publish
                            .iter()
                            .filter_map(|p| crate::control::ports::parse(p, "").ok())
                            .map(|p| p.to_string())
                            .collect(),
                    });
                }
                Action::CreateNetwork(spec) => c.networks.push(NetworkView {
                    name: spec.name.clone(),
                    id: spec.name.clone(),
                    driver: spec.driver.clone().unwrap_or_else(|| "bridge".into()),
                    subnet: spec.subnet.clone(),
                    gateway: None,
                    subnet6: spec.subnet6.clone(),
                    gateway6: None,
                    ip_range: spec.ip_range.clone(),
                    internal: spec.internal,
                    mtu: spec.mtu.unwrap_or(1500),
                    vni: spec.vni,
                    mac_aging_s: 300,
                    offload: spec.offload.unwrap_or(true),
                    options: spec.options.clone(),
                    endpoints: vec![],
                    nat: None,
                    overlay: None,
                    host: None,
                }),
                Action::CreateSandbox(spec) => {
                    let mut interfaces = Vec::new();
                    for n in &spec.networks {
                        let net = c.networks.iter_mut().find(|v| &v.name == n).expect("net");
                        let ip = spec.ip.get(n).cloned().unwrap_or_else(|| {
                            let base = net.subnet.clone().unwrap_or_default();
                            let prefix: Vec<&str> = base.split('.').take(3).collect();
                            format!("{}.{}", prefix.join("."), net.endpoints.len() + 10)
                        });
                        net.endpoints.push(EndpointView {
                            sandbox: spec.name.clone(),
                            interface: None,
                            mac: None,
                            ipv4: Some(format!("{ip}/24")),
                            ipv6: None,
                            aliases: vec![],
                            plugin_info: None,
                            container_id: None,
                            netns: None,
                            kind: None,
                        });
                        interfaces.push(InterfaceView {
                            network: n.clone(),
                            interface: None,
                            mac: None,
                            ipv4: Some(format!("{ip}/24")),
                            ipv6: None,
                            aliases: vec![],
                            impairment: None,
                            blocked: vec![],
                            plugin_info: None,
                        });
                    }
                    c.sandboxes.push(SandboxView {
                        name: spec.name.clone(),
                        id: spec.name.clone(),
                        hostname: spec.hostname.clone().unwrap_or(spec.name.clone()),
                        netns: String::new(),
                        utsns: None,
                        etc: None,
                        enter: String::new(),
                        interfaces,
                        ports: vec![],
                    });
                }
                Action::SetLink {
                    sandbox,
                    network,
                    impairment,
                } => {
                    if let Some(p) = c.ports.iter_mut().find(|p| &p.name == sandbox) {
                        assert_eq!(&p.network, network, "a port's link on its network");
                        p.impairment = (!impairment.is_noop()).then(|| impairment.clone());
                        continue;
                    }
                    let v = c
                        .sandboxes
                        .iter_mut()
                        .find(|v| &v.name == sandbox)
                        .expect("sb");
                    let i = v
                        .interfaces
                        .iter_mut()
                        .find(|i| &i.network == network)
                        .expect("if");
                    i.impairment = (!impairment.is_noop()).then(|| impairment.clone());
                }
                Action::Block {
                    a,
                    b,
                    network,
                    block,
                } => {
                    for (me, other) in [(a, b), (b, a)] {
                        let blocked = match c.ports.iter_mut().find(|p| &p.name == me) {
                            Some(p) => &mut p.blocked,
                            None => {
                                let v = c.sandboxes.iter_mut().find(|v| &v.name == me).expect("sb");
                                let i = v
                                    .interfaces
                                    .iter_mut()
                                    .find(|i| &i.network == network)
                                    .expect("if");
                                &mut i.blocked
                            }
                        };
                        blocked.retain(|x| x != other);
                        if *block {
                            blocked.push(other.clone());
                        }
                    }
                }
                Action::StartCommand { .. } => {}
            }
        }
        c
    }

    #[test]
    fn up_twice_changes_nothing_and_down_undoes_it() {
        let t = topo(FILE);
        let start = Current::default();
        let (actions, record) = plan_up(&t, &start, &Record::default()).expect("plan");
        let text: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "create network front (subnet 10.70.0.0/24)",
                "create network back (subnet 10.71.0.0/24) internal",
                "create sandbox web on front=10.70.0.2, back",
                "create sandbox db on back",
                "set link db back: delay 20ms",
                "block db web on back",
                "start in web: sleep 1000",
            ]
        );
        let after = simulate(&start, &actions);
        let (again, record2) = plan_up(&t, &after, &record).expect("plan again");
        assert!(again.is_empty(), "second up: {again:?}");
        assert_eq!(record, record2);
        let down = plan_down(&after, &record);
        let gone = simulate(&after, &down);
        assert!(
            gone.networks.is_empty() && gone.sandboxes.is_empty(),
            "{down:?}"
        );
    }

    #[test]
    fn a_changed_file_changes_only_what_differs() {
        let t = topo(FILE);
        let (actions, record) = plan_up(&t, &Current::default(), &Record::default()).expect("plan");
        let now = simulate(&Current::default(), &actions);
        // Another delay, no block, and db's address pinned.
        let changed = topo(
            &FILE
                .replace("delay = \"20ms\"", "delay = \"50ms\"")
                .replace("[[block]]\na = \"web\"\nb = \"db\"\n", "")
                .replace(
                    "name = \"db\"\nnetworks = [\"back\"]",
                    "name = \"db\"\nnetworks = [\"back\"]\nip = { back = \"10.71.0.9\" }",
                ),
        );
        let (actions, _) = plan_up(&changed, &now, &record).expect("plan change");
        let text: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "remove sandbox db",
                "create sandbox db on back=10.71.0.9",
                "set link db back: delay 50ms",
                "unblock db web on back",
            ]
        );
        // Dropping the link from the file clears it.
        let unlinked = topo(&FILE.replace(
            "[[link]]\nsandbox = \"db\"\nnetwork = \"back\"\ndelay = \"20ms\"\n",
            "",
        ));
        let (actions, _) = plan_up(&unlinked, &now, &record).expect("plan unlink");
        assert_eq!(
            actions,
            vec![Action::SetLink {
                sandbox: "db".into(),
                network: "back".into(),
                impairment: Impairment::default(),
            }]
        );
    }

    #[test]
    fn leaves_alone_what_it_did_not_make() {
        let t = topo(FILE);
        let mut theirs = simulate(
            &Current::default(),
            &[Action::CreateNetwork(NetworkSpec {
                name: "front".into(),
                subnet: Some("10.99.0.0/24".into()),
                ..Default::default()
            })],
        );
        let err = plan_up(&t, &theirs, &Record::default()).expect_err("clash");
        assert!(err.contains("not made by this file"), "{err}");
        // A matching network that was there before is used, not owned: down keeps it.
        theirs.networks[0].subnet = Some("10.70.0.0/24".into());
        let (actions, record) = plan_up(&t, &theirs, &Record::default()).expect("plan");
        assert!(!actions.contains(&Action::CreateNetwork(t.networks[0].clone())));
        assert!(!record.networks.contains(&"front".to_string()));
        let after = simulate(&theirs, &actions);
        let down = plan_down(&after, &record);
        assert!(
            !down.contains(&Action::RemoveNetwork("front".into())),
            "{down:?}"
        );
        let missing = topo("[[sandbox]]\nname = \"s\"\nnetworks = [\"nowhere\"]\n");
        assert!(plan_up(&missing, &Current::default(), &Record::default()).is_err());
    }

    const VMS: &str = r#"
[[network]]
name = "lab"
subnet = "10.70.0.0/24"

[[sandbox]]
name = "client"
networks = ["lab"]

[[port]]
name = "vm1"
network = "lab"
qemu_socket = "/run/vm1.sock"
ip = "10.70.0.5"

[[link]]
sandbox = "vm1"
network = "lab"
delay = "20ms"
"#;

    fn lines(actions: &[Action]) -> Vec<String> {
        actions.iter().map(|a| a.to_string()).collect()
    }

    /// `up` of VMS from nothing: the state after it and its record.
    fn vms_up() -> (Current, Record) {
        let (actions, record) =
            plan_up(&topo(VMS), &Current::default(), &Record::default()).expect("plan");
        (simulate(&Current::default(), &actions), record)
    }

    #[test]
    fn a_block_between_a_port_and_a_sandbox_is_set_once_and_lifted() {
        let file = format!("{VMS}\n[[block]]\na = \"client\"\nb = \"vm1\"\n");
        let t = topo(&file);
        let (actions, record) = plan_up(&t, &Current::default(), &Record::default()).expect("plan");
        assert!(lines(&actions).contains(&"block client vm1 on lab".to_string()));
        let after = simulate(&Current::default(), &actions);
        let (again, _) = plan_up(&t, &after, &record).expect("plan again");
        assert!(again.is_empty(), "second up: {again:?}");
        // Gone from the file: unblocked, nothing else.
        let (lift, _) = plan_up(&topo(VMS), &after, &record).expect("plan without the block");
        assert_eq!(lines(&lift), ["unblock client vm1 on lab"]);
        // A block naming what the file does not declare is refused.
        let bad = format!("{VMS}\n[[block]]\na = \"client\"\nb = \"vm9\"\n");
        assert!(Topology::parse(&bad, "t").is_err());
    }

    #[test]
    fn ports_are_made_then_kept_then_removed_by_down() {
        let t = topo(VMS);
        let (actions, record) = plan_up(&t, &Current::default(), &Record::default()).expect("plan");
        assert_eq!(
            lines(&actions),
            [
                "create network lab (subnet 10.70.0.0/24)",
                "create sandbox client on lab",
                "create port vm1 on lab=10.70.0.5 (qemu-socket /run/vm1.sock)",
                "set link vm1 lab: delay 20ms",
            ]
        );
        assert_eq!(record.ports, ["vm1"]);
        assert_eq!(record.links, [("vm1".to_string(), "lab".to_string())]);
        let after = simulate(&Current::default(), &actions);
        let (again, record2) = plan_up(&t, &after, &record).expect("plan again");
        assert!(again.is_empty(), "second up: {again:?}");
        assert_eq!(record, record2);
        // A port made with an allocated address and MAC matches a file that gives neither.
        let unpinned = topo(&VMS.replace("ip = \"10.70.0.5\"\n", ""));
        let (actions, _) =
            plan_up(&unpinned, &Current::default(), &Record::default()).expect("plan");
        let now = simulate(&Current::default(), &actions);
        assert!(
            lines(&actions).contains(&"create port vm1 on lab (qemu-socket /run/vm1.sock)".into())
        );
        let (again, _) = plan_up(&unpinned, &now, &record).expect("plan again");
        assert!(again.is_empty(), "{again:?}");

        let down = plan_down(&after, &record);
        assert_eq!(
            lines(&down),
            [
                "remove sandbox client",
                "remove port vm1",
                "remove network lab"
            ]
        );
        let gone = simulate(&after, &down);
        assert!(
            gone.ports.is_empty() && gone.networks.is_empty(),
            "{down:?}"
        );
    }

    #[test]
    fn a_changed_port_of_the_file_is_replaced() {
        let (now, record) = vms_up();
        let changed = topo(&VMS.replace("10.70.0.5", "10.70.0.9"));
        let (actions, next) = plan_up(&changed, &now, &record).expect("plan");
        assert_eq!(
            lines(&actions),
            [
                "remove port vm1",
                "create port vm1 on lab=10.70.0.9 (qemu-socket /run/vm1.sock)",
                "set link vm1 lab: delay 20ms",
            ]
        );
        assert_eq!(next, record);
        // Another kind or path replaces it too; the MAC when the file gives one.
        for text in [
            VMS.replace("qemu_socket", "vhost_user"),
            VMS.replace("/run/vm1.sock", "/run/other.sock"),
            VMS.replace("ip = ", "mac = \"02:00:00:00:00:01\"\nip = "),
        ] {
            let (actions, _) = plan_up(&topo(&text), &now, &record).expect("plan");
            assert_eq!(
                actions.first(),
                Some(&Action::RemovePort("vm1".into())),
                "{text}"
            );
        }
        // Only the link changed: the port stays.
        let slower = topo(&VMS.replace("20ms", "50ms"));
        let (actions, _) = plan_up(&slower, &now, &record).expect("plan");
        assert_eq!(lines(&actions), ["set link vm1 lab: delay 50ms"]);
    }

    #[test]
    fn a_port_not_made_by_the_file_is_used_or_refused() {
        let theirs = simulate(
            &simulate(
                &Current::default(),
                &[Action::CreateNetwork(topo(VMS).networks[0].clone())],
            ),
            &[Action::CreatePort(PortSpec {
                name: "vm1".into(),
                network: "lab".into(),
                qemu_socket: Some("/run/theirs.sock".into()),
                ..Default::default()
            })],
        );
        let err = plan_up(&topo(VMS), &theirs, &Record::default()).expect_err("clash");
        assert_eq!(
            err,
            "port vm1 exists with other settings and was not made by this file"
        );
        // The same settings: used, not owned, so down leaves it.
        let same = topo(
            &VMS.replace("/run/vm1.sock", "/run/theirs.sock")
                .replace("ip = \"10.70.0.5\"\n", ""),
        );
        let (actions, record) = plan_up(&same, &theirs, &Record::default()).expect("plan");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CreatePort(_) | Action::RemovePort(_))),
            "{actions:?}"
        );
        assert!(record.ports.is_empty());
        let after = simulate(&theirs, &actions);
        let down = plan_down(&after, &record);
        assert!(
            !down.contains(&Action::RemovePort("vm1".into())),
            "{down:?}"
        );
        // Its link, set by the file, is cleared by down.
        assert!(down.contains(&Action::SetLink {
            sandbox: "vm1".into(),
            network: "lab".into(),
            impairment: Impairment::default(),
        }));
        // A network the file must replace but that holds their port is refused.
        let record = Record {
            networks: vec!["lab".into()],
            ..Record::default()
        };
        let resized = topo(&VMS.replace("10.70.0.0/24", "10.70.0.0/16"));
        let err = plan_up(&resized, &theirs, &record).expect_err("their port");
        assert!(
            err.contains("port vm1 (not made by this file) uses it"),
            "{err}"
        );
        // A port on a network that neither the file nor the daemon has.
        let nowhere = topo("[[port]]\nname = \"p\"\nnetwork = \"x\"\niface = \"eth9\"\n");
        let err = plan_up(&nowhere, &Current::default(), &Record::default()).expect_err("no net");
        assert!(err.contains("no network x"), "{err}");
    }

    #[test]
    fn a_port_gone_from_the_file_is_removed() {
        let (now, record) = vms_up();
        let without = topo(&VMS.replace(
            "[[port]]\nname = \"vm1\"\nnetwork = \"lab\"\nqemu_socket = \"/run/vm1.sock\"\nip = \"10.70.0.5\"\n",
            "",
        ).replace("[[link]]\nsandbox = \"vm1\"\nnetwork = \"lab\"\ndelay = \"20ms\"\n", ""));
        let (actions, next) = plan_up(&without, &now, &record).expect("plan");
        assert_eq!(lines(&actions), ["remove port vm1"]);
        assert!(next.ports.is_empty() && next.links.is_empty());
    }

    #[test]
    fn a_replaced_network_takes_the_files_ports_with_it() {
        let (now, record) = vms_up();
        let resized = topo(&VMS.replace("10.70.0.0/24", "10.70.0.0/16"));
        let (actions, next) = plan_up(&resized, &now, &record).expect("plan");
        assert_eq!(
            lines(&actions),
            [
                "remove sandbox client",
                "remove port vm1",
                "remove network lab",
                "create network lab (subnet 10.70.0.0/16)",
                "create sandbox client on lab",
                "create port vm1 on lab=10.70.0.5 (qemu-socket /run/vm1.sock)",
                "set link vm1 lab: delay 20ms",
            ]
        );
        assert_eq!(next, record);
        let after = simulate(&now, &actions);
        let (again, _) = plan_up(&resized, &after, &next).expect("plan again");
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn an_old_record_without_ports_loads() {
        let old = r#"{"networks":["n"],"sandboxes":["s"]}"#;
        let record: Record = serde_json::from_str(old).expect("old record");
        assert!(record.ports.is_empty());
    }
}
