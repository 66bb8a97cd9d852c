//! The control side of `tapnet link`: impairments and blocks live on endpoints in the model
//! (so they persist and show in `sandbox inspect`); `sync` pushes them onto the switch ports.
//! The model edits are pure functions of the state, checked in full before anything changes.

use std::collections::HashMap;

use super::model::{Endpoint, Sandbox, State};
use crate::api::lab::{LinkChange, LinkRow};
use crate::datapath::Datapath;
use crate::datapath::fdb::PortId;
use crate::datapath::impair::Impairment;
use crate::error::{Error, Result};

/// Switch ports of endpoints, by (sandbox, interface): the controller's map.
pub type PortMap = HashMap<(String, String), PortId>;

/// What a link of `tapnet link` is made of: a sandbox's endpoint on a network, or a VM port
/// (`tapnet port add`), named like a sandbox.
struct LinkEnd<'a> {
    impairment: &'a mut Option<Impairment>,
    blocked: &'a mut Vec<String>,
}

/// The link of sandbox or VM port `name` on `network`, which must be a switched one.
fn link_end<'a>(state: &'a mut State, name: &str, network: &str) -> Result<LinkEnd<'a>> {
    let net = state
        .network(network)
        .ok_or_else(|| Error::not_found("network", network))?;
    if !crate::drivers::of(net.driver).supports_impairments() {
        return Err(Error::invalid(format!(
            "network {network} (driver {}) has no switch links to impair",
            net.driver.name()
        )));
    }
    if state.sandbox(name).is_none()
        && let Some(port) = state.vm_ports.iter_mut().find(|p| p.name == name)
    {
        if port.network != network {
            return Err(Error::conflict(format!(
                "port {name} is not on network {network}"
            )));
        }
        return Ok(LinkEnd {
            impairment: &mut port.impairment,
            blocked: &mut port.blocked,
        });
    }
    let at = state
        .sandboxes
        .position(name)
        .ok_or_else(|| Error::not_found("sandbox", name))?;
    let sb = state.sandboxes.at_mut(at);
    let ep = std::sync::Arc::make_mut(sb)
        .endpoints
        .iter_mut()
        .find(|e| e.network == network)
        .ok_or_else(|| {
            Error::conflict(format!(
                "sandbox {name} is not connected to network {network}"
            ))
        })?;
    Ok(LinkEnd {
        impairment: &mut ep.impairment,
        blocked: &mut ep.blocked,
    })
}

/// The networks sandbox or VM port `name` is on.
fn networks_of(state: &State, name: &str) -> Vec<String> {
    match state.sandbox(name) {
        Some(sb) => sb.endpoints.iter().map(|e| e.network.clone()).collect(),
        None => state
            .vm_ports
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.network.clone())
            .collect(),
    }
}

/// Merge `change` into the link's impairments (a sandbox's endpoint, or a VM port's by its
/// name). Returns the network to sync.
pub fn apply_change(state: &mut State, change: &LinkChange) -> Result<String> {
    let end = link_end(state, &change.sandbox, &change.network)?;
    *end.impairment = merged(end.impairment.clone(), change)?;
    Ok(change.network.clone())
}

/// `impairment` with `change`'s values in it, checked; None when it does nothing.
fn merged(impairment: Option<Impairment>, change: &LinkChange) -> Result<Option<Impairment>> {
    let mut imp = impairment.unwrap_or_default();
    let c = change;
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = c.$f { imp.$f = v; } )* };
    }
    take!(
        delay_us,
        jitter_us,
        loss_ppm,
        duplicate_ppm,
        corrupt_ppm,
        reorder_ppm,
        rate_bps,
        down,
        both
    );
    if c.seed.is_some() {
        imp.seed = c.seed;
    }
    imp.validate().map_err(|e| {
        Error::invalid(format!(
            "link of {} on network {}: {e}",
            c.sandbox, c.network
        ))
    })?;
    Ok(if imp.is_noop() { None } else { Some(imp) })
}

/// Block (or unblock) traffic between `a` and `b` (sandboxes or VM ports) on `network`, or on
/// every network they share. Returns the networks to sync.
pub fn set_block(
    state: &mut State,
    a: &str,
    b: &str,
    network: Option<&str>,
    block: bool,
) -> Result<Vec<String>> {
    if a == b {
        return Err(Error::invalid(format!(
            "cannot block sandbox {a} from itself"
        )));
    }
    for name in [a, b] {
        if state.sandbox(name).is_none() && !state.vm_ports.iter().any(|p| p.name == name) {
            return Err(Error::not_found("sandbox or port", name));
        }
    }
    let nets: Vec<String> = match network {
        Some(n) => vec![n.to_string()],
        None => {
            let on_b = networks_of(state, b);
            let shared: Vec<String> = networks_of(state, a)
                .into_iter()
                .filter(|n| on_b.contains(n) && is_bridge(state, n))
                .collect();
            if shared.is_empty() {
                return Err(Error::conflict(format!(
                    "{a} and {b} share no bridge network"
                )));
            }
            shared
        }
    };
    // Check every link exists before changing any.
    for net in &nets {
        link_end(state, a, net)?;
        link_end(state, b, net)?;
    }
    for net in &nets {
        for (me, other) in [(a, b), (b, a)] {
            let blocked = link_end(state, me, net)?.blocked;
            blocked.retain(|s| s != other);
            if block {
                blocked.push(other.to_string());
                blocked.sort();
            }
        }
    }
    Ok(nets)
}

fn is_bridge(state: &State, network: &str) -> bool {
    state
        .network(network)
        .is_some_and(|n| crate::drivers::of(n.driver).supports_impairments())
}

/// The links of the model that are `wanted` (by owner, network, whether impaired, blocks),
/// with their owner's name: sandboxes' endpoints and VM ports. Only the sandboxes with a wanted
/// link are made the model's own copy (`Arc::make_mut`): the rest stay shared with the store.
fn link_ends(
    state: &mut State,
    wanted: impl Fn(&str, &str, bool, &[String]) -> bool,
) -> Vec<(&str, &str, LinkEnd<'_>)> {
    let mut ends = Vec::new();
    for sb in state.sandboxes.iter_mut() {
        let any = sb
            .endpoints
            .iter()
            .any(|ep| wanted(&sb.name, &ep.network, ep.impairment.is_some(), &ep.blocked));
        if !any {
            continue;
        }
        let Sandbox {
            name, endpoints, ..
        } = std::sync::Arc::make_mut(sb);
        for ep in endpoints.iter_mut() {
            let Endpoint {
                network,
                impairment,
                blocked,
                ..
            } = ep;
            if wanted(name, network, impairment.is_some(), blocked) {
                ends.push((
                    name.as_str(),
                    network.as_str(),
                    LinkEnd {
                        impairment,
                        blocked,
                    },
                ));
            }
        }
    }
    for p in state.vm_ports.iter_mut() {
        if wanted(&p.name, &p.network, p.impairment.is_some(), &p.blocked) {
            let end = LinkEnd {
                impairment: &mut p.impairment,
                blocked: &mut p.blocked,
            };
            ends.push((p.name.as_str(), p.network.as_str(), end));
        }
    }
    ends
}

/// Clear impairments and blocks of every link matching the filters (`sandbox` may name a VM
/// port). Returns the networks that changed.
pub fn reset(
    state: &mut State,
    network: Option<&str>,
    sandbox: Option<&str>,
) -> Result<Vec<String>> {
    if let Some(n) = network {
        state
            .network(n)
            .ok_or_else(|| Error::not_found("network", n))?;
    }
    if let Some(s) = sandbox
        && state.sandbox(s).is_none()
        && !state.vm_ports.iter().any(|p| p.name == s)
    {
        return Err(Error::not_found("sandbox", s));
    }
    let mut changed: Vec<String> = Vec::new();
    let linked = |_: &str, net: &str, impaired: bool, blocked: &[String]| {
        network.is_none_or(|n| n == net) && (impaired || !blocked.is_empty())
    };
    for (name, net, end) in link_ends(state, linked) {
        let before = (end.impairment.is_some(), end.blocked.len());
        if sandbox.is_none_or(|s| s == name) {
            *end.impairment = None;
            end.blocked.clear();
        } else if let Some(s) = sandbox {
            // The other half of a block that `s` had.
            end.blocked.retain(|b| b != s);
        }
        if before != (end.impairment.is_some(), end.blocked.len())
            && !changed.iter().any(|c| c == net)
        {
            changed.push(net.to_string());
        }
    }
    Ok(changed)
}

/// Blocks `forget` removed, as (owner, network, partner), to put back if the request fails.
pub type Forgotten = Vec<(String, String, String)>;

/// Drop the blocks that name `leaving` (a sandbox or VM port, on `network` or everywhere).
pub fn forget(state: &mut State, leaving: &str, network: Option<&str>) -> Forgotten {
    let mut gone = Vec::new();
    let blocking = |_: &str, net: &str, _: bool, blocked: &[String]| {
        network.is_none_or(|n| n == net) && blocked.iter().any(|b| b == leaving)
    };
    for (name, net, end) in link_ends(state, blocking) {
        end.blocked.retain(|b| b != leaving);
        gone.push((name.to_string(), net.to_string(), leaving.to_string()));
    }
    gone
}

/// Undo `forget` (the request that left failed).
pub fn remember(state: &mut State, forgotten: Forgotten) {
    for (owner, network, partner) in forgotten {
        let owned = |n: &str, net: &str, _: bool, _: &[String]| n == owner && net == network;
        if let Some((_, _, end)) = link_ends(state, owned).into_iter().next()
            && !end.blocked.contains(&partner)
        {
            end.blocked.push(partner);
            end.blocked.sort();
        }
    }
}

/// Put the model's impairments and blocks of `network` onto its switch ports: sandboxes'
/// (`ports`) and VM ports' (`vm_port`: a served port's id by name). The port of `restart`
/// (a sandbox or VM port just configured) starts its random draws again from the seed.
pub fn sync(
    state: &State,
    ports: &PortMap,
    dp: &Datapath,
    network: &str,
    restart: Option<&str>,
    vm_port: impl Fn(&str) -> Option<PortId>,
) {
    // Switch ports by name, found once: this runs at every endpoint's wiring, so a lookup per
    // partner through the whole model would make it quadratic in the network's size.
    let mut ids: HashMap<&str, PortId> = HashMap::new();
    for (sb, ep) in state.endpoints_on(network) {
        if let Some(id) = ep
            .interface
            .as_ref()
            .and_then(|i| ports.get(&(sb.name.clone(), i.clone())))
        {
            ids.insert(&sb.name, *id);
        }
    }
    for p in state.vm_ports.iter().filter(|p| p.network == network) {
        if let Some(id) = vm_port(&p.name) {
            ids.insert(&p.name, id);
        }
    }
    let port_of = |name: &str| ids.get(name).copied();
    let links = (state.endpoints_on(network))
        .map(|(sb, ep)| (sb.name.as_str(), ep.impairment.as_ref(), &ep.blocked))
        .chain(vm_links(state, network));
    configure(dp, links, restart, |_, _| true, port_of);
}

/// `sync` for what the wiring or unwiring of sandbox or VM port `name` on `network` can change:
/// its own link, and its partners' blocks of it (port ids are reused, so a partner must stop
/// naming a removed port's). The rest of the network's links are as they were: at every
/// create, this costs a scan of the model's names instead of a configuration of every port.
pub fn sync_around(
    state: &State,
    ports: &PortMap,
    dp: &Datapath,
    network: &str,
    name: &str,
    vm_port: impl Fn(&str) -> Option<PortId>,
) {
    let port_of = |n: &str| match state.sandbox(n) {
        Some(sb) => sb
            .endpoint(network)
            .and_then(|ep| ep.interface.as_ref())
            .and_then(|i| ports.get(&(n.to_string(), i.clone())).copied()),
        None => state
            .vm_ports
            .iter()
            .find(|p| p.name == n && p.network == network)
            .and_then(|p| vm_port(&p.name)),
    };
    // Its own link, found by name, and the links that block something: the network's other
    // links are skipped on an emptiness test, without comparing a network name each.
    let own = state
        .sandbox(name)
        .and_then(|sb| sb.endpoint(network))
        .map(|ep| (name, ep.impairment.as_ref(), &ep.blocked));
    let blocking = state.sandboxes.iter().flat_map(|sb| {
        (sb.endpoints.iter())
            .filter(|ep| !ep.blocked.is_empty() && sb.name != name && ep.network == network)
            .map(|ep| (sb.name.as_str(), ep.impairment.as_ref(), &ep.blocked))
    });
    let links = own
        .into_iter()
        .chain(blocking)
        .chain(vm_links(state, network));
    let concerned =
        |link: &str, blocked: &[String]| link == name || blocked.iter().any(|b| b == name);
    configure(dp, links, None, concerned, port_of);
}

/// A link as `configure` takes it: its owner's name, impairment and blocks.
type Link<'a> = (
    &'a str,
    Option<&'a crate::datapath::impair::Impairment>,
    &'a Vec<String>,
);

/// The links of the VM ports on `network`.
fn vm_links<'a>(state: &'a State, network: &'a str) -> impl Iterator<Item = Link<'a>> {
    (state.vm_ports.iter())
        .filter(move |p| p.network == network)
        .map(|p| (p.name.as_str(), p.impairment.as_ref(), &p.blocked))
}

/// Configure the switch port of every link of `links` that is `wanted` (by its name and the
/// names it blocks) from the model.
fn configure<'a>(
    dp: &Datapath,
    links: impl Iterator<Item = Link<'a>>,
    restart: Option<&str>,
    wanted: impl Fn(&str, &[String]) -> bool,
    port_of: impl Fn(&str) -> Option<PortId>,
) {
    for (name, impairment, blocked) in links {
        if !wanted(name, blocked) {
            continue;
        }
        let Some(id) = port_of(name) else { continue };
        let Some(port) = dp.port(id) else { continue };
        let blocked: Vec<PortId> = blocked.iter().filter_map(|s| port_of(s)).collect();
        port.link
            .configure(impairment, blocked, u64::from(id), restart == Some(name));
    }
}

/// Rows of `tapnet link show`: endpoints (and VM ports, `port_of` giving their switch ports)
/// with impairments or blocks.
pub fn rows(
    state: &State,
    ports: &PortMap,
    dp: &Datapath,
    network: Option<&str>,
    port_of: impl Fn(&str) -> Option<PortId>,
) -> Result<Vec<LinkRow>> {
    if let Some(n) = network {
        state
            .network(n)
            .ok_or_else(|| Error::not_found("network", n))?;
    }
    let mut out = Vec::new();
    for sb in &state.sandboxes {
        for ep in &sb.endpoints {
            if network.is_some_and(|n| n != ep.network)
                || (ep.impairment.is_none() && ep.blocked.is_empty())
            {
                continue;
            }
            let interface = ep.interface.clone().unwrap_or_default();
            let stats = ports
                .get(&(sb.name.clone(), interface.clone()))
                .and_then(|id| dp.port(*id))
                .map(|p| p.link.counters.snapshot());
            let impairment = ep.impairment.clone().unwrap_or_default();
            out.push(LinkRow {
                network: ep.network.clone(),
                sandbox: sb.name.clone(),
                interface,
                summary: impairment.describe(),
                impairment,
                blocked: ep.blocked.clone(),
                stats,
            });
        }
    }
    for p in &state.vm_ports {
        if network.is_some_and(|n| n != p.network)
            || (p.impairment.is_none() && p.blocked.is_empty())
        {
            continue;
        }
        let impairment = p.impairment.clone().unwrap_or_default();
        out.push(LinkRow {
            network: p.network.clone(),
            sandbox: p.name.clone(),
            interface: format!("port:{}", p.name),
            summary: impairment.describe(),
            impairment,
            blocked: p.blocked.clone(),
            stats: port_of(&p.name)
                .and_then(|id| dp.port(id))
                .map(|port| port.link.counters.snapshot()),
        });
    }
    out.sort_by(|a, b| (&a.network, &a.sandbox).cmp(&(&b.network, &b.sandbox)));
    Ok(out)
}

/// The impairment of an endpoint, if any (for trace).
#[cfg(test)]
pub fn impairment_of<'a>(
    state: &'a State,
    sandbox: &str,
    network: &str,
) -> Option<&'a crate::datapath::impair::Impairment> {
    state
        .sandbox(sandbox)?
        .endpoint(network)?
        .impairment
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{Endpoint, Network, Sandbox};

    fn state() -> State {
        let net = |name: &str, driver: &str| {
            Network::for_test(name, crate::drivers::named(driver).unwrap())
        };
        let sb = |name: &str, nets: &[&str]| Sandbox {
            name: name.into(),
            id: name.into(),
            hostname: name.into(),
            endpoints: nets
                .iter()
                .enumerate()
                .map(|(i, n)| Endpoint {
                    id: format!("{name}{i}"),
                    network: n.to_string(),
                    interface: Some(format!("eth{i}")),
                    mac: None,
                    ipv4: None,
                    ipv6: None,
                    aliases: vec![],
                    impairment: None,
                    blocked: vec![],
                })
                .collect(),
            ports: vec![],
        };
        State {
            version: 1,
            generation: 0,
            networks: vec![
                net("front", "bridge"),
                net("back", "bridge"),
                net("host", "host"),
            ],
            sandboxes: [
                sb("a", &["front", "back"]),
                sb("b", &["front", "back"]),
                sb("c", &["back"]),
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            ula: None,
            vm_ports: Vec::new(),
            cni: Vec::new(),
            docker_plugins: Vec::new(),
            committed_requests: Default::default(),
        }
    }

    #[test]
    fn old_state_files_load_without_link_fields() {
        let old = r#"{"id":"e","network":"n","interface":"eth0","mac":"02:42:0a:00:00:02",
            "ipv4":"10.0.0.2","aliases":[]}"#;
        let ep: Endpoint = serde_json::from_str(old).expect("old endpoint loads");
        assert!(ep.impairment.is_none() && ep.blocked.is_empty());
        // And an endpoint without them saves as before: no new keys.
        let text = serde_json::to_string(&ep).expect("json");
        assert!(
            !text.contains("impairment") && !text.contains("blocked"),
            "{text}"
        );
    }

    #[test]
    fn set_merges_and_noop_clears() {
        let mut st = state();
        let mut ch = LinkChange {
            sandbox: "a".into(),
            network: "front".into(),
            delay_us: Some(20_000),
            ..Default::default()
        };
        apply_change(&mut st, &ch).expect("set delay");
        ch.delay_us = None;
        ch.loss_ppm = Some(100_000);
        apply_change(&mut st, &ch).expect("add loss");
        let imp = impairment_of(&st, "a", "front").expect("impaired");
        assert_eq!((imp.delay_us, imp.loss_ppm), (20_000, 100_000));
        ch.delay_us = Some(0);
        ch.loss_ppm = Some(0);
        apply_change(&mut st, &ch).expect("clear");
        assert!(impairment_of(&st, "a", "front").is_none());
    }

    #[test]
    fn bad_changes_change_nothing() {
        let mut st = state();
        let before = serde_json::to_string(&st).expect("json");
        let bad = [
            LinkChange {
                sandbox: "a".into(),
                network: "front".into(),
                jitter_us: Some(5),
                ..Default::default()
            },
            LinkChange {
                sandbox: "c".into(),
                network: "front".into(),
                ..Default::default()
            },
            LinkChange {
                sandbox: "a".into(),
                network: "host".into(),
                ..Default::default()
            },
            LinkChange {
                sandbox: "zz".into(),
                network: "front".into(),
                ..Default::default()
            },
        ];
        for ch in &bad {
            assert!(apply_change(&mut st, ch).is_err(), "{ch:?}");
        }
        assert!(set_block(&mut st, "a", "c", Some("front"), true).is_err());
        assert!(set_block(&mut st, "a", "a", None, true).is_err());
        assert_eq!(before, serde_json::to_string(&st).expect("json"));
    }

    #[test]
    fn blocks_are_symmetric_and_forgotten() {
        let mut st = state();
        let nets = set_block(&mut st, "a", "b", None, true).expect("block");
        assert_eq!(nets, vec!["front".to_string(), "back".to_string()]);
        let blocked = |st: &State, s: &str, n: &str| {
            st.sandbox(s)
                .and_then(|s| s.endpoint(n))
                .map(|e| e.blocked.clone())
                .unwrap_or_default()
        };
        assert_eq!(blocked(&st, "b", "back"), vec!["a".to_string()]);
        set_block(&mut st, "a", "b", Some("back"), false).expect("unblock");
        assert!(blocked(&st, "a", "back").is_empty());
        assert_eq!(blocked(&st, "a", "front"), vec!["b".to_string()]);
        let gone = forget(&mut st, "b", None);
        assert!(blocked(&st, "a", "front").is_empty());
        remember(&mut st, gone.clone());
        assert_eq!(blocked(&st, "a", "front"), vec!["b".to_string()]);
        forget(&mut st, "b", None);
        set_block(&mut st, "a", "c", None, true).expect("block on back");
        assert_eq!(
            reset(&mut st, None, Some("c")).expect("reset"),
            vec!["back"]
        );
        assert!(blocked(&st, "a", "back").is_empty());
    }

    #[test]
    fn a_vm_port_blocks_and_is_blocked_like_a_sandbox() {
        let mut st = state();
        st.vm_ports.push(crate::control::model::VmPort {
            name: "vm".into(),
            network: "back".into(),
            kind: crate::control::model::VmPortKind::QemuSocket,
            path: "/run/vm.sock".into(),
            mac: "02:42:0a:00:00:05".parse().unwrap(),
            ipv4: None,
            ipv6: None,
            was_down: false,
            impairment: None,
            blocked: Vec::new(),
            ports: Vec::new(),
        });
        let port_blocks = |st: &State| st.vm_ports[0].blocked.clone();
        let on_back = |st: &State, s: &str| {
            st.sandbox(s)
                .unwrap()
                .endpoint("back")
                .unwrap()
                .blocked
                .clone()
        };
        // Only the network they share: the port is not on front.
        assert_eq!(
            set_block(&mut st, "a", "vm", None, true).expect("block"),
            vec!["back"]
        );
        assert_eq!(port_blocks(&st), vec!["a".to_string()]);
        assert_eq!(on_back(&st, "a"), vec!["vm".to_string()]);
        assert!(set_block(&mut st, "a", "vm", Some("front"), true).is_err());
        assert_eq!(
            port_blocks(&st),
            vec!["a".to_string()],
            "a failed block changes nothing"
        );
        // The port leaving takes the sandbox's half with it, and back on failure.
        let gone = forget(&mut st, "vm", None);
        assert!(on_back(&st, "a").is_empty());
        remember(&mut st, gone);
        assert_eq!(on_back(&st, "a"), vec!["vm".to_string()]);
        // A sandbox leaving takes the port's half.
        forget(&mut st, "a", Some("back"));
        assert!(port_blocks(&st).is_empty());
        set_block(&mut st, "c", "vm", None, true).expect("block c");
        assert_eq!(
            reset(&mut st, None, Some("vm")).expect("reset"),
            vec!["back"]
        );
        assert!(port_blocks(&st).is_empty() && on_back(&st, "c").is_empty());
        assert!(set_block(&mut st, "vm", "nobody", None, true).is_err());
    }
}
