//! Networks' `--opt` maps and their typed forms. A leaf: the model keeps a network's typed
//! options (`Network::typed`) without depending on the drivers that produce them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::datapath::fdb::{DEFAULT_AGING_SECS, DEFAULT_PORT_LIMIT};
use crate::datapath::vxlan;
use crate::error::{Error, Result};
use crate::gateway::NatLimits;

/// `--opt KEY=VALUE` pairs as stored on a network.
pub type Options = BTreeMap<String, String>;

/// How long an idle UDP NAT flow lives unless `--opt nat_udp_timeout=SECONDS` says otherwise.
pub const DEFAULT_UDP_IDLE_SECS: u32 = 30;

/// A network's options as its driver validated them (`NetworkDriver::validate`), once, when the
/// network is planned or loaded. Kept in memory with the network, never persisted: the option
/// map is what the state file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct NetOptions {
    /// The MAC aging the options give (`mac_aging`, or the default).
    pub mac_aging_s: u32,
    /// A switched network's switch, gateway and port options.
    pub bridge: Option<BridgeOptions>,
    /// An overlay network's VTEP and peers.
    pub overlay: Option<OverlayOptions>,
}

impl NetOptions {
    /// A driver's that takes no options of its own.
    pub fn plain(mac_aging_s: u32) -> Self {
        NetOptions {
            mac_aging_s,
            bridge: None,
            overlay: None,
        }
    }
}

/// Refuse keys outside `known`, naming the ones the driver takes.
pub fn check_keys(driver: &str, options: &Options, known: &[&str]) -> Result<()> {
    match options.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) if known.is_empty() => Err(Error::invalid(format!(
            "option {k}: driver {driver} takes no options"
        ))),
        Some(k) => Err(Error::invalid(format!(
            "unknown option {k} for driver {driver} (known: {})",
            known.join(", ")
        ))),
    }
}

/// A `--opt KEY=N` number > 0: `None` when absent.
pub fn option_positive(options: &Options, key: &str, what: &str) -> Result<Option<u32>> {
    options
        .get(key)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::invalid(format!("option {key}={v}: expected {what} > 0")))
        })
        .transpose()
}

/// A bridge network's options, typed, with their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgeOptions {
    /// `mac_aging=SECONDS`: MAC table aging time.
    pub mac_aging_s: u32,
    /// `nat_udp_timeout=SECONDS`: idle UDP NAT flows expire after it.
    pub udp_idle_s: u32,
    /// `port_security=on|off`: may a sandbox's port send only as its endpoint?
    pub port_security: bool,
    /// `max_macs_per_port=N`: stations one port may own in the MAC table.
    pub max_macs_per_port: u32,
    /// `nat_{udp,tcp}_flows_per_{sandbox,gateway}=N`, `nat_udp_peers=N`: the gateway's caps.
    pub nat: NatLimits,
    /// `host_loopback=on|off`: does the gateway address lead to the host's loopback?
    pub host_loopback: bool,
    /// `host_access=on|off`: does the host get an interface on the network?
    pub host_access: bool,
    /// `host_ip=ADDR`, `host_ip6=ADDR`: the host interface's addresses. The daemon picks them
    /// from IPAM when the network is made (a user may name them) and keeps them in the option
    /// map, so a restarted daemon gives the interface the same ones.
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_ip6: Option<std::net::Ipv6Addr>,
    /// `icc=true|false` (or Docker's `com.docker.network.bridge.enable_icc`): may sandboxes
    /// reach each other, or only the gateway?
    pub icc: bool,
    /// `policy_default=allow|deny`: what a flow no policy rule matches gets.
    pub policy_default_allow: bool,
    /// `policy_flows=N`: the bound of the policy's connection table.
    pub policy_flows: u32,
}

impl BridgeOptions {
    /// The known keys' values over the defaults; other keys are not looked at (the driver
    /// checks them).
    pub fn parse(options: &Options) -> Result<Self> {
        let secs = |key| option_positive(options, key, "a number of seconds");
        let mut nat = NatLimits::default();
        let set = |key: &str, field: &mut usize| -> Result<()> {
            if let Some(n) = option_positive(options, key, "a number")? {
                *field = n as usize;
            }
            Ok(())
        };
        set("nat_udp_flows_per_sandbox", &mut nat.udp.per_sandbox)?;
        set("nat_udp_flows_per_gateway", &mut nat.udp.per_gateway)?;
        set("nat_tcp_flows_per_sandbox", &mut nat.tcp.per_sandbox)?;
        set("nat_tcp_flows_per_gateway", &mut nat.tcp.per_gateway)?;
        set("nat_udp_peers", &mut nat.published_udp_peers)?;
        let host_access = on_off(options, "host_access", false)?;
        let host_ip = parsed_ip(options, "host_ip")?;
        let host_ip6 = parsed_ip(options, "host_ip6")?;
        if !host_access && (host_ip.is_some() || host_ip6.is_some()) {
            return Err(Error::invalid(
                "options host_ip and host_ip6 need host_access=on",
            ));
        }
        Ok(BridgeOptions {
            mac_aging_s: secs("mac_aging")?.unwrap_or(DEFAULT_AGING_SECS),
            udp_idle_s: secs("nat_udp_timeout")?.unwrap_or(DEFAULT_UDP_IDLE_SECS),
            port_security: on_off(options, "port_security", true)?,
            max_macs_per_port: option_positive(options, "max_macs_per_port", "a number")?
                .unwrap_or(DEFAULT_PORT_LIMIT),
            nat,
            host_loopback: on_off(options, "host_loopback", false)?,
            host_access,
            host_ip,
            host_ip6,
            icc: parse_icc(options)?,
            policy_default_allow: match options.get("policy_default").map(String::as_str) {
                None | Some("allow") => true,
                Some("deny") => false,
                Some(v) => {
                    return Err(Error::invalid(format!(
                        "option policy_default={v}: expected allow or deny"
                    )));
                }
            },
            policy_flows: option_positive(options, "policy_flows", "a number")?
                .unwrap_or(crate::datapath::conntrack::DEFAULT_MAX_FLOWS as u32),
        })
    }
}

/// A `--opt KEY=ADDR` address of type `T` (IPv4 or IPv6): `None` when absent.
fn parsed_ip<T: std::str::FromStr>(options: &Options, key: &str) -> Result<Option<T>> {
    options
        .get(key)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| Error::invalid(format!("option {key}={v}: expected an address")))
        })
        .transpose()
}

/// A `--opt KEY=on|off` switch, `default` when absent.
pub fn on_off(options: &Options, key: &str, default: bool) -> Result<bool> {
    match options.get(key).map(String::as_str) {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(v) => Err(Error::invalid(format!(
            "option {key}={v}: expected on or off"
        ))),
    }
}

/// Docker's name of `icc`, which its plugin passes through in the generic options.
pub const DOCKER_ICC: &str = "com.docker.network.bridge.enable_icc";

/// `icc` or Docker's `enable_icc`, `true`/`false` (also `on`/`off`); both given must agree.
fn parse_icc(options: &Options) -> Result<bool> {
    let mut icc = None;
    for key in ["icc", DOCKER_ICC] {
        let Some(v) = options.get(key) else { continue };
        let on = match v.as_str() {
            "true" | "on" => true,
            "false" | "off" => false,
            v => {
                return Err(Error::invalid(format!(
                    "option {key}={v}: expected true or false"
                )));
            }
        };
        if icc.is_some_and(|i| i != on) {
            return Err(Error::invalid(format!(
                "options icc and {DOCKER_ICC} disagree"
            )));
        }
        icc = Some(on);
    }
    Ok(icc.unwrap_or(true))
}

/// `ADDR[:PORT]`, port 4789 when left out. An IPv6 address with a port is bracketed
/// (`[fd00::1]:4789`); without one it may be bare or bracketed (`fd00::1`, `[fd00::1]`).
pub fn parse_vtep_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<SocketAddr>()
        .or_else(|_| {
            bare.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, vxlan::DEFAULT_PORT))
        })
        .map_err(|_| {
            format!("bad address {s:?}: expected ADDR, ADDR:PORT or, for IPv6, [ADDR]:PORT")
        })
}

/// Refuse peers of another family than the VTEP: its socket reaches only its own.
pub fn check_families(vtep: SocketAddr, peers: &[SocketAddr]) -> Result<()> {
    match peers.iter().find(|p| p.is_ipv6() != vtep.is_ipv6()) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(format!(
            "option peers: {p} is IPv{} but the VTEP {vtep} is IPv{}: a VTEP reaches peers of its own family only",
            if p.is_ipv6() { 6 } else { 4 },
            if vtep.is_ipv6() { 6 } else { 4 },
        ))),
    }
}

/// An overlay network's own options, typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OverlayOptions {
    /// `vtep=ADDR[:PORT]`: this host's VTEP for the network.
    pub vtep: Option<SocketAddr>,
    /// `peers=ADDR[:PORT],...`: the other hosts' VTEPs.
    pub peers: Vec<SocketAddr>,
}

impl OverlayOptions {
    pub fn parse(options: &Options) -> Result<Self> {
        let vtep = options
            .get("vtep")
            .map(|v| parse_vtep_addr(v).map_err(|e| Error::invalid(format!("option vtep: {e}"))))
            .transpose()?;
        let peers = options
            .get("peers")
            .map(|list| {
                list.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        parse_vtep_addr(p).map_err(|e| Error::invalid(format!("option peers: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        if let Some(vtep) = vtep {
            check_families(vtep, &peers)?;
        }
        Ok(OverlayOptions { vtep, peers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bridge_options_parse_over_defaults_and_refuse_bad_values() {
        let mut o = Options::new();
        let d = BridgeOptions::parse(&o).unwrap();
        assert_eq!(d.mac_aging_s, DEFAULT_AGING_SECS);
        assert!(d.port_security);
        o.insert("port_security".into(), "off".into());
        o.insert("nat_udp_peers".into(), "7".into());
        let p = BridgeOptions::parse(&o).unwrap();
        assert!(!p.port_security);
        assert_eq!(p.nat.published_udp_peers, 7);
        o.insert("mac_aging".into(), "soon".into());
        let err = BridgeOptions::parse(&o).unwrap_err().to_string();
        assert!(err.contains("mac_aging=soon"), "{err}");
    }

    #[test]
    fn port_security_that_does_not_parse_is_an_error_not_on() {
        let err = BridgeOptions::parse(&opts(&[("port_security", "of")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port_security=of"), "{err}");
    }

    #[test]
    fn host_loopback_and_host_access_are_off_unless_asked() {
        let d = BridgeOptions::parse(&Options::new()).unwrap();
        assert!(!d.host_loopback && !d.host_access);
        let on =
            BridgeOptions::parse(&opts(&[("host_loopback", "on"), ("host_access", "on")])).unwrap();
        assert!(on.host_loopback && on.host_access);
        let err = BridgeOptions::parse(&opts(&[("host_loopback", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host_loopback=yes"), "{err}");
        let with_ip = opts(&[
            ("host_access", "on"),
            ("host_ip", "10.0.0.2"),
            ("host_ip6", "fd00::2"),
        ]);
        let p = BridgeOptions::parse(&with_ip).unwrap();
        assert_eq!(p.host_ip, Some(std::net::Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p.host_ip6, Some("fd00::2".parse().unwrap()));
        let err = BridgeOptions::parse(&opts(&[("host_ip", "10.0.0.2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("need host_access=on"), "{err}");
        let err = BridgeOptions::parse(&opts(&[("host_access", "on"), ("host_ip6", "10.0.0.2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host_ip6=10.0.0.2"), "{err}");
    }

    #[test]
    fn vtep_and_peers_parse_with_the_default_port() {
        let o = OverlayOptions::parse(&opts(&[
            ("vtep", "127.0.0.2"),
            ("peers", "127.0.0.3,10.0.0.1:9000"),
        ]))
        .unwrap();
        assert_eq!(o.vtep, Some("127.0.0.2:4789".parse().unwrap()));
        assert_eq!(
            o.peers,
            vec![
                "127.0.0.3:4789".parse().unwrap(),
                "10.0.0.1:9000".parse().unwrap()
            ]
        );
        let err = OverlayOptions::parse(&opts(&[("peers", "a.b")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("option peers") && err.contains("a.b"), "{err}");
    }

    #[test]
    fn ipv6_vteps_and_peers_parse_bracketed_with_a_port_and_bare_without() {
        let o = OverlayOptions::parse(&opts(&[
            ("vtep", "[fd00::1]:4790"),
            ("peers", "fd00::2,[fd00::3],[fd00::4]:9000"),
        ]))
        .unwrap();
        assert_eq!(o.vtep, Some("[fd00::1]:4790".parse().unwrap()));
        assert_eq!(
            o.peers,
            vec![
                "[fd00::2]:4789".parse().unwrap(),
                "[fd00::3]:4789".parse().unwrap(),
                "[fd00::4]:9000".parse().unwrap()
            ]
        );
        // Unbracketed, a last group is part of the address, never a port.
        assert_eq!(
            parse_vtep_addr("fd00::1:4790"),
            Ok("[fd00::1:4790]:4789".parse().unwrap())
        );
        assert!(parse_vtep_addr("[fd00::1").is_err());
        let err = OverlayOptions::parse(&opts(&[("vtep", "fd00::1"), ("peers", "10.0.0.2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.2:4789 is IPv4"), "{err}");
    }
}
