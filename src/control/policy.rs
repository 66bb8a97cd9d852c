//! `tapnet policy`: a network's ordered allow/deny rules as the model keeps them, their checks
//! (the API's and a loaded state's), and their resolution into the prefixes the datapath
//! matches (`datapath::policy::PolicySpec`). A selector names a sandbox or alias of the network
//! (all its addresses there, both families, resolved again whenever endpoints change) or a
//! CIDR of either family.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::control::model::{Network, State, validate_name};
use crate::datapath::policy::{Cidr, PolicySpec, Proto, RuleSpec, addr_v4, addr_v6};
use crate::drivers::options::BridgeOptions;
use crate::error::{Error, Result};

/// Rules a network may hold.
pub const MAX_RULES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// One rule as persisted on its network and shown by `policy ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub name: String,
    /// Source selector (sandbox, alias or CIDR); none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination selector; none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub proto: Proto,
    /// Destination port or range `N` / `N-M` (TCP or UDP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    pub action: Action,
}

/// A selector: a CIDR (or a bare address), else a sandbox or alias name.
enum Selector {
    Cidr(Cidr),
    Name(String),
}

fn selector(s: &str) -> Result<Selector> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        if prefix.is_some() {
            return Err(Error::invalid(format!("bad CIDR {s:?}")));
        }
        validate_name("sandbox or alias", s).map_err(Error::Invalid)?;
        return Ok(Selector::Name(s.to_string()));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| Error::invalid(format!("bad prefix length in {s:?} (0-{max})")))?,
    };
    Ok(Selector::Cidr(match ip {
        IpAddr::V4(v4) => Cidr::v4(v4, prefix),
        IpAddr::V6(v6) => Cidr::v6(v6, prefix),
    }))
}

/// `N` or `N-M`, 1-65535, N <= M.
pub fn port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || Error::invalid(format!("bad port {s:?}: expected N or N-M, 1-65535"));
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// A rule checked alone (its name, selectors, port and protocol).
pub fn check_rule(rule: &PolicyRule) -> Result<()> {
    validate_name("rule", &rule.name).map_err(Error::Invalid)?;
    for s in [&rule.from, &rule.to].into_iter().flatten() {
        selector(s)?;
    }
    if let Some(p) = &rule.port {
        port_range(p)?;
        if !matches!(rule.proto, Proto::Tcp | Proto::Udp) {
            return Err(Error::invalid(format!(
                "rule {}: a port needs --proto tcp or udp",
                rule.name
            )));
        }
    }
    Ok(())
}

/// A network's rules checked together (a loaded state's, or after an add): each alone, names
/// unique, not too many, only on a switched network.
pub fn check_rules(net: &Network) -> Result<()> {
    if net.policy.is_empty() {
        return Ok(());
    }
    if !crate::drivers::of(net.driver).switched() {
        return Err(Error::invalid(format!(
            "policy rules on a network of driver {}",
            net.driver.name()
        )));
    }
    if net.policy.len() > MAX_RULES {
        return Err(Error::invalid(format!(
            "{} policy rules, at most {MAX_RULES}",
            net.policy.len()
        )));
    }
    for (i, r) in net.policy.iter().enumerate() {
        check_rule(r)?;
        if net.policy[..i].iter().any(|o| o.name == r.name) {
            return Err(Error::invalid(format!(
                "policy rule {} is listed twice",
                r.name
            )));
        }
    }
    Ok(())
}

/// The first free `rule-N` of a network.
pub fn free_name(net: &Network) -> String {
    (1..)
        .map(|n| format!("rule-{n}"))
        .find(|n| !net.policy.iter().any(|r| &r.name == n))
        .unwrap_or_default()
}

/// The prefixes a selector stands for on `net` now: a name's endpoints' addresses there (and
/// those of the cluster's `remote` endpoints: `(sandbox, addresses)`).
fn resolve(
    state: &State,
    net: &Network,
    remote: &[(String, Vec<IpAddr>)],
    sel: &Option<String>,
) -> Option<Vec<Cidr>> {
    let sel = sel.as_ref()?;
    Some(match selector(sel) {
        Ok(Selector::Cidr(c)) => vec![c],
        Ok(Selector::Name(name)) => {
            let mut out = Vec::new();
            for (sb, ep) in state.endpoints_on(&net.name) {
                if sb.name == name || ep.aliases.contains(&name) {
                    out.extend(ep.ipv4.map(|ip| Cidr::host(addr_v4(ip))));
                    out.extend(ep.ipv6.map(|ip| Cidr::host(addr_v6(ip))));
                }
            }
            // A VM's port, by its name (`tapnet port add`).
            for port in state.vm_ports.iter() {
                if port.network == net.name && port.name == name {
                    out.extend(port.ipv4.map(|ip| Cidr::host(addr_v4(ip))));
                    out.extend(port.ipv6.map(|ip| Cidr::host(addr_v6(ip))));
                }
            }
            for (_, ips) in remote.iter().filter(|(sb, _)| *sb == name) {
                out.extend(ips.iter().map(|ip| {
                    Cidr::host(match ip {
                        IpAddr::V4(v4) => addr_v4(*v4),
                        IpAddr::V6(v6) => addr_v6(*v6),
                    })
                }));
            }
            out
        }
        // Checked when added and loaded: cannot happen; match nothing.
        Err(_) => Vec::new(),
    })
}

/// What the datapath should enforce on `net` (a switched network with options `opts`).
pub fn spec(
    state: &State,
    net: &Network,
    opts: &BridgeOptions,
    remote: &[(String, Vec<IpAddr>)],
) -> PolicySpec {
    let rules = net
        .policy
        .iter()
        .map(|r| RuleSpec {
            name: r.name.clone(),
            from: resolve(state, net, remote, &r.from),
            to: resolve(state, net, remote, &r.to),
            proto: r.proto,
            ports: r.port.as_deref().and_then(|p| port_range(p).ok()),
            allow: r.action == Action::Allow,
        })
        .collect();
    PolicySpec {
        icc: opts.icc,
        default_allow: opts.policy_default_allow,
        rules,
        gateways: net
            .gateway
            .map(addr_v4)
            .into_iter()
            .chain(net.gateway6.map(addr_v6))
            .collect(),
        max_flows: opts.policy_flows as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> PolicyRule {
        PolicyRule {
            name: name.into(),
            from: None,
            to: None,
            proto: Proto::Any,
            port: None,
            action: Action::Deny,
        }
    }

    #[test]
    fn selectors_and_ports() {
        assert!(matches!(selector("10.0.0.0/8"), Ok(Selector::Cidr(_))));
        assert!(matches!(selector("fd00::1"), Ok(Selector::Cidr(_))));
        assert!(matches!(selector("web"), Ok(Selector::Name(_))));
        assert!(selector("10.0.0.0/33").is_err());
        assert!(selector("web/8").is_err());
        assert!(selector("../x").is_err());
        assert_eq!(port_range("80").unwrap(), (80, 80));
        assert_eq!(port_range("8000-8080").unwrap(), (8000, 8080));
        for bad in ["0", "9-8", "x", "70000", "1-"] {
            assert!(port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_vm_port_is_selected_by_its_name() {
        let network = |name: &str| Network::for_test(name, crate::control::model::Driver::Bridge);
        let net = network("n");
        let mut state = State::default();
        state.vm_ports.push(crate::control::model::VmPort {
            name: "vm1".into(),
            network: "n".into(),
            kind: crate::control::model::VmPortKind::QemuSocket,
            path: "/run/vm1.sock".into(),
            mac: "02:42:0a:00:00:05".parse().unwrap(),
            ipv4: Some("10.0.0.5".parse().unwrap()),
            ipv6: None,
            was_down: false,
            impairment: None,
            blocked: Vec::new(),
            ports: Vec::new(),
        });
        let on_n = resolve(&state, &net, &[], &Some("vm1".into()));
        assert_eq!(
            on_n,
            Some(vec![Cidr::host(addr_v4("10.0.0.5".parse().unwrap()))])
        );
        // Another network's port of that name is not this one's.
        let other = network("m");
        assert_eq!(
            resolve(&state, &other, &[], &Some("vm1".into())),
            Some(vec![])
        );
    }

    #[test]
    fn a_port_needs_tcp_or_udp() {
        let mut r = rule("r");
        r.port = Some("80".into());
        assert!(check_rule(&r).is_err());
        r.proto = Proto::Tcp;
        assert!(check_rule(&r).is_ok());
        assert!(check_rule(&rule("bad name")).is_err());
    }
}
