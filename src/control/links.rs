//! The control side of `tapnet link`: impairments and blocks live on endpoints in the model
//! (so they persist and show in `sandbox inspect`); `sync` pushes them onto the switch ports.
//! The model edits are pure functions of the state, checked in full before anything changes.

use std::collections::HashMap;

use super::model::State;
use crate::api::lab::{LinkChange, LinkRow};
use crate::datapath::Datapath;
use crate::datapath::fdb::PortId;
use crate::datapath::impair::Impairment;
use crate::error::{Error, Result};

/// Switch ports of endpoints, by (sandbox, interface): the controller's map.
pub type PortMap = HashMap<(String, String), PortId>;

fn bridge_endpoint<'a>(
    state: &'a mut State,
    sandbox: &str,
    network: &str,
) -> Result<&'a mut super::model::Endpoint> {
    let net = state
        .network(network)
        .ok_or_else(|| Error::not_found("network", network))?;
    if !crate::drivers::of(net.driver).supports_impairments() {
        return Err(Error::invalid(format!(
            "network {network} (driver {}) has no switch links to impair",
            net.driver.name()
        )));
    }
    let sb = state
        .sandboxes
        .iter_mut()
        .find(|s| s.name == sandbox)
        .ok_or_else(|| Error::not_found("sandbox", sandbox))?;
    sb.endpoints
        .iter_mut()
        .find(|e| e.network == network)
        .ok_or_else(|| {
            Error::conflict(format!(
                "sandbox {sandbox} is not connected to network {network}"
            ))
        })
}

/// Merge `change` into the endpoint's impairments (or a VM port's, `tapnet port add`, by its
/// name). Returns the network to sync.
pub fn apply_change(state: &mut State, change: &LinkChange) -> Result<String> {
    if state.sandbox(&change.sandbox).is_none()
        && let Some(i) = state.vm_ports.iter().position(|p| p.name == change.sandbox)
    {
        if state.vm_ports[i].network != change.network {
            return Err(Error::conflict(format!(
                "port {} is not on network {}",
                change.sandbox, change.network
            )));
        }
        if !is_bridge(state, &change.network) {
            return Err(Error::invalid(format!(
                "network {} has no switch links to impair",
                change.network
            )));
        }
        let port = &mut state.vm_ports[i];
        port.impairment = merged(port.impairment.clone(), change)?;
        return Ok(change.network.clone());
    }
    let ep = bridge_endpoint(state, &change.sandbox, &change.network)?;
    ep.impairment = merged(ep.impairment.clone(), change)?;
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

/// Block (or unblock) traffic between sandboxes `a` and `b` on `network`, or on every network
/// they share. Returns the networks to sync.
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
        state
            .sandbox(name)
            .ok_or_else(|| Error::not_found("sandbox", name))?;
    }
    let nets: Vec<String> = match network {
        Some(n) => vec![n.to_string()],
        None => {
            let on_b: Vec<&String> = state
                .sandbox(b)
                .map(|s| s.endpoints.iter().map(|e| &e.network).collect())
                .unwrap_or_default();
            let shared: Vec<String> = state
                .sandbox(a)
                .map(|s| {
                    s.endpoints
                        .iter()
                        .map(|e| e.network.clone())
                        .filter(|n| on_b.contains(&n) && is_bridge(state, n))
                        .collect()
                })
                .unwrap_or_default();
            if shared.is_empty() {
                return Err(Error::conflict(format!(
                    "sandboxes {a} and {b} share no bridge network"
                )));
            }
            shared
        }
    };
    // Check every endpoint exists before changing any.
    for net in &nets {
        bridge_endpoint(state, a, net)?;
        bridge_endpoint(state, b, net)?;
    }
    for net in &nets {
        for (me, other) in [(a, b), (b, a)] {
            let ep = bridge_endpoint(state, me, net)?;
            ep.blocked.retain(|s| s != other);
            if block {
                ep.blocked.push(other.to_string());
                ep.blocked.sort();
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

/// Clear impairments and blocks of every endpoint matching the filters. Returns the networks
/// that changed.
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
    let mut changed = Vec::new();
    for port in state.vm_ports.iter_mut() {
        if network.is_some_and(|n| n != port.network) || sandbox.is_some_and(|s| s != port.name) {
            continue;
        }
        if port.impairment.take().is_some() && !changed.contains(&port.network) {
            changed.push(port.network.clone());
        }
    }
    for sb in state.sandboxes.iter_mut() {
        for ep in sb.endpoints.iter_mut() {
            if network.is_some_and(|n| n != ep.network) {
                continue;
            }
            let mine = sandbox.is_none_or(|s| s == sb.name);
            let before = (ep.impairment.is_some(), ep.blocked.len());
            if mine {
                ep.impairment = None;
                ep.blocked.clear();
            } else if let Some(s) = sandbox {
                // The other half of a block that sandbox `s` had.
                ep.blocked.retain(|b| b != s);
            }
            if before != (ep.impairment.is_some(), ep.blocked.len())
                && !changed.contains(&ep.network)
            {
                changed.push(ep.network.clone());
            }
        }
    }
    Ok(changed)
}

/// Blocks `forget` removed, as (sandbox, network, partner), to put back if the request fails.
pub type Forgotten = Vec<(String, String, String)>;

/// Drop the blocks that name `sandbox` (on `network`, or everywhere): it is leaving.
pub fn forget(state: &mut State, sandbox: &str, network: Option<&str>) -> Forgotten {
    let mut gone = Vec::new();
    for sb in state.sandboxes.iter_mut() {
        for ep in sb.endpoints.iter_mut() {
            if network.is_none_or(|n| n == ep.network) && ep.blocked.iter().any(|b| b == sandbox) {
                ep.blocked.retain(|b| b != sandbox);
                gone.push((sb.name.clone(), ep.network.clone(), sandbox.to_string()));
            }
        }
    }
    gone
}

/// Undo `forget` (the request that left failed).
pub fn remember(state: &mut State, forgotten: Forgotten) {
    for (sandbox, network, partner) in forgotten {
        if let Some(ep) = state
            .sandboxes
            .iter_mut()
            .find(|s| s.name == sandbox)
            .and_then(|s| s.endpoints.iter_mut().find(|e| e.network == network))
            && !ep.blocked.contains(&partner)
        {
            ep.blocked.push(partner);
            ep.blocked.sort();
        }
    }
}

/// Put the model's impairments and blocks of `network` onto its switch ports. The port of
/// `restart` (a sandbox just configured) starts its random draws again from the seed.
pub fn sync(state: &State, ports: &PortMap, dp: &Datapath, network: &str, restart: Option<&str>) {
    let port_of = |sandbox: &str| -> Option<PortId> {
        let ep = state.sandbox(sandbox)?.endpoint(network)?;
        ports
            .get(&(sandbox.to_string(), ep.interface.clone()?))
            .copied()
    };
    for (sb, ep) in state.endpoints_on(network) {
        let Some(id) = port_of(&sb.name) else {
            continue;
        };
        let Some(port) = dp.port(id) else { continue };
        let blocked: Vec<PortId> = ep.blocked.iter().filter_map(|s| port_of(s)).collect();
        port.link.configure(
            ep.impairment.as_ref(),
            blocked,
            u64::from(id),
            restart == Some(sb.name.as_str()),
        );
    }
}

/// Put the impairments of `network`'s VM ports onto their switch ports (`port_of`: a served
/// port's id by name); `restart` as in `sync`.
pub fn sync_vm_ports(
    state: &State,
    dp: &Datapath,
    network: &str,
    restart: Option<&str>,
    port_of: impl Fn(&str) -> Option<PortId>,
) {
    for p in state.vm_ports.iter().filter(|p| p.network == network) {
        let Some(id) = port_of(&p.name) else { continue };
        let Some(port) = dp.port(id) else { continue };
        port.link.configure(
            p.impairment.as_ref(),
            Vec::new(),
            u64::from(id),
            restart == Some(p.name.as_str()),
        );
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
        let Some(impairment) = p.impairment.clone() else {
            continue;
        };
        if network.is_some_and(|n| n != p.network) {
            continue;
        }
        out.push(LinkRow {
            network: p.network.clone(),
            sandbox: p.name.clone(),
            interface: format!("port:{}", p.name),
            summary: impairment.describe(),
            impairment,
            blocked: Vec::new(),
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
            networks: vec![
                net("front", "bridge"),
                net("back", "bridge"),
                net("host", "host"),
            ],
            sandboxes: vec![
                sb("a", &["front", "back"]),
                sb("b", &["front", "back"]),
                sb("c", &["back"]),
            ],
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
}
