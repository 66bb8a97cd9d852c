//! What `tapnet up` and `tapnet down` must change: a pure function of the file, what the daemon
//! has now, and the record of what earlier `up`s of this file made. Nothing here talks to the
//! daemon, so every case is a unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{NetworkSpec, SandboxSpec, Topology};
use crate::api::types::{NetworkView, SandboxView};
use crate::datapath::impair::Impairment;

/// What an `up` of a file made, kept in the state dir so that `down` removes exactly that.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub networks: Vec<String>,
    pub sandboxes: Vec<String>,
    /// The command started in each sandbox the file made.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// (sandbox, network) links the file impaired.
    #[serde(default)]
    pub links: Vec<(String, String)>,
    /// (a, b, network) blocks the file set, with a < b.
    #[serde(default)]
    pub blocks: Vec<(String, String, String)>,
}

/// What the daemon has: its answers to `network ls` and `sandbox ls`.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub networks: Vec<NetworkView>,
    pub sandboxes: Vec<SandboxView>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    RemoveSandbox(String),
    RemoveNetwork(String),
    CreateNetwork(NetworkSpec),
    CreateSandbox(SandboxSpec),
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
    let ports: BTreeSet<String> = spec
        .publish
        .iter()
        .map(|p| {
            crate::control::ports::parse(p, "")
                .map(|pp| pp.to_string())
                .unwrap_or_else(|_| p.clone())
        })
        .collect();
    let have: BTreeSet<String> = view.ports.iter().cloned().collect();
    same_nets
        && addrs
        && ports == have
        && spec.hostname.as_ref().is_none_or(|h| &view.hostname == h)
}

fn pair(a: &str, b: &str, net: &str) -> (String, String, String) {
    if a <= b {
        (a.into(), b.into(), net.into())
    } else {
        (b.into(), a.into(), net.into())
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
    let mut remove_sb: Vec<String> = Vec::new();
    let mut remove_net: Vec<String> = Vec::new();
    let mut create_net: Vec<NetworkSpec> = Vec::new();
    let mut create_sb: Vec<SandboxSpec> = Vec::new();
    let mut owned_nets: Vec<String> = Vec::new();
    let mut owned_sbs: Vec<String> = Vec::new();

    let in_file_sb = |s: &str| topo.sandboxes.iter().any(|x| x.name == s);
    let in_file_net = |n: &str| topo.networks.iter().any(|x| x.name == n);
    // A network that must go (changed, or gone from the file) takes its sandboxes with it;
    // they must all be the file's.
    let mut drop_network = |name: &str, remove_sb: &mut Vec<String>| -> Result<(), String> {
        if let Some(v) = net_view(name) {
            for ep in &v.endpoints {
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
                drop_network(&spec.name, &mut remove_sb)?;
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
        drop_network(name, &mut remove_sb)?;
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
        match sb_view(&spec.name) {
            None => {
                create_sb.push(spec.clone());
                owned_sbs.push(spec.name.clone());
            }
            Some(v)
                if !remove_sb.contains(&spec.name)
                    && sandbox_matches(spec, v)
                    && (same_command || !owned && spec.command.is_none()) =>
            {
                if owned {
                    owned_sbs.push(spec.name.clone());
                }
            }
            Some(_) if owned => {
                if !remove_sb.contains(&spec.name) {
                    remove_sb.push(spec.name.clone());
                }
                create_sb.push(spec.clone());
                owned_sbs.push(spec.name.clone());
            }
            Some(_) => {
                return Err(format!(
                    "sandbox {} exists with other settings and was not made by this file",
                    spec.name
                ));
            }
        }
    }
    for name in record.sandboxes.iter().filter(|s| !in_file_sb(s)) {
        if sb_view(name).is_some() && !remove_sb.contains(name) {
            remove_sb.push(name.clone());
        }
    }

    // Links and blocks: compare with what the surviving sandboxes have; new ones have none.
    let fresh = |s: &str| create_sb.iter().any(|c| c.name == s);
    let current_link = |s: &str, n: &str| -> Impairment {
        if fresh(s) {
            return Impairment::default();
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
        let alive = sb_view(s).is_some() && !remove_sb.contains(s) && !fresh(s);
        if !kept && alive && !current_link(s, n).is_noop() {
            link_actions.push(Action::SetLink {
                sandbox: s.clone(),
                network: n.clone(),
                impairment: Impairment::default(),
            });
        }
    }
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
    actions.extend(remove_net.iter().cloned().map(Action::RemoveNetwork));
    actions.extend(create_net.into_iter().map(Action::CreateNetwork));
    actions.extend(create_sb.iter().cloned().map(Action::CreateSandbox));
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
        links,
        blocks,
    };
    Ok((actions, next))
}

/// The plan of `tapnet down`: what the record says the file made and still exists.
pub fn plan_down(current: &Current, record: &Record) -> Vec<Action> {
    let sb_alive = |s: &str| current.sandboxes.iter().any(|v| v.name == s);
    let mut actions = Vec::new();
    for (s, n) in &record.links {
        if !record.sandboxes.contains(s) && sb_alive(s) {
            actions.push(Action::SetLink {
                sandbox: s.clone(),
                network: n.clone(),
                impairment: Impairment::default(),
            });
        }
    }
    for (a, b, n) in &record.blocks {
        if !(record.sandboxes.contains(a) || record.sandboxes.contains(b))
            && sb_alive(a)
            && sb_alive(b)
        {
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
                Action::RemoveNetwork(n) => c.networks.retain(|v| &v.name != n),
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
                        let v = c.sandboxes.iter_mut().find(|v| &v.name == me).expect("sb");
                        let i = v
                            .interfaces
                            .iter_mut()
                            .find(|i| &i.network == network)
                            .expect("if");
                        i.blocked.retain(|x| x != other);
                        if *block {
                            i.blocked.push(other.clone());
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
}
