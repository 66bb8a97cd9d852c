//! The bridge driver: a userspace L2 switch per network, TAP endpoints in the sandboxes, and a
//! gateway (NAT, DNS, published ports) on a socketpair port of the switch.

use std::path::Path;

use super::{Ctx, NetworkDriver, Options, check_keys, option_positive};
use crate::control::model::{Endpoint, Network};
use crate::control::wiring::{self, TapSpec};
use crate::datapath::fdb::{DEFAULT_AGING_SECS, DEFAULT_PORT_LIMIT};
use crate::datapath::frame::MacAddr;
use crate::datapath::security::PortPolicy;
use crate::error::{Context, Error, Result};
use crate::gateway::dns::DnsServer;
use crate::gateway::{Gateway, GatewayConfig, NatLimits};
use crate::netns::tap::Offload;

/// How long an idle UDP NAT flow lives unless `--opt nat_udp_timeout=SECONDS` says otherwise.
pub const DEFAULT_UDP_IDLE_SECS: u32 = 30;

/// Label of a network's gateway port in `stats` and `fdb`.
pub const GATEWAY_PORT: &str = "gateway";

/// Every `--opt` key of a bridge network.
pub const KEYS: &[&str] = &[
    "mac_aging",
    "nat_udp_timeout",
    "port_security",
    "max_macs_per_port",
    "nat_udp_flows_per_sandbox",
    "nat_udp_flows_per_gateway",
    "nat_tcp_flows_per_sandbox",
    "nat_tcp_flows_per_gateway",
    "nat_udp_peers",
];

/// A bridge network's options, typed, with their defaults.
#[derive(Clone, Debug)]
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
}

impl BridgeOptions {
    /// The known keys' values over the defaults; other keys are not looked at (a network
    /// restored from an older state file keeps working).
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
        Ok(BridgeOptions {
            mac_aging_s: secs("mac_aging")?.unwrap_or(DEFAULT_AGING_SECS),
            udp_idle_s: secs("nat_udp_timeout")?.unwrap_or(DEFAULT_UDP_IDLE_SECS),
            port_security: match options.get("port_security").map(String::as_str) {
                None | Some("on") => true,
                Some("off") => false,
                Some(v) => {
                    return Err(Error::invalid(format!(
                        "option port_security={v}: expected on or off"
                    )));
                }
            },
            max_macs_per_port: option_positive(options, "max_macs_per_port", "a number")?
                .unwrap_or(DEFAULT_PORT_LIMIT),
            nat,
        })
    }
}

pub struct Bridge;

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }
    fn check_create(&self) -> Result<()> {
        Ok(())
    }
    fn check_options(&self, options: &Options) -> Result<()> {
        check_keys(self.name(), options, KEYS)?;
        BridgeOptions::parse(options).map(|_| ())
    }
    fn switched(&self) -> bool {
        true
    }
    fn setup_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        add_switch(ctx, net)
    }
    fn setup_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        netns: &Path,
        sandbox: &str,
        ep: &Endpoint,
        net: &Network,
    ) -> Result<Option<MacAddr>> {
        add_tap(ctx, netns, sandbox, ep, net).map(|_| None)
    }
}

/// The two ends of a gateway's switch port: a socketpair that keeps frame boundaries.
pub fn gateway_port() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .context(|| "create gateway port".into())?;
    for fd in [&a, &b] {
        // Room for a burst of 64 KiB super-frames each way.
        let _ = setsockopt(fd, sockopt::SndBuf, &(4 << 20));
        let _ = setsockopt(fd, sockopt::RcvBuf, &(4 << 20));
    }
    Ok((a, b))
}

/// The datapath side of a switched network: its switch, and its gateway on an internal port.
pub fn add_switch(ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
    let opts = BridgeOptions::parse(&net.options)?;
    let id = ctx.dp.add_network(&net.name, net.mtu, net.mac_aging_s);
    ctx.nets.insert(net.name.clone(), id);
    if let Some(dp_net) = ctx.dp.network(id) {
        dp_net.fdb.set_port_limit(opts.max_macs_per_port);
    }
    let (Some(subnet), Some(ip)) = (net.subnet, net.gateway) else {
        return Ok(());
    };
    let config = GatewayConfig {
        network: net.name.clone(),
        subnet,
        ip,
        mac: MacAddr::from_ipv4(ip),
        mtu: net.mtu,
        nat: !net.internal,
        policy: ctx.nat_policy.clone(),
        udp_idle: std::time::Duration::from_secs(u64::from(opts.udp_idle_s)),
        limits: opts.nat,
        dns: None,
    };
    // Internal networks resolve their own names only; others forward, but only to upstreams
    // the NAT policy admits.
    let upstreams = if net.internal {
        Vec::new()
    } else {
        ctx.dns_upstreams
            .iter()
            .filter(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => ctx.nat_policy.allows(ip),
                std::net::IpAddr::V6(_) => false,
            })
            .copied()
            .collect()
    };
    let started = gateway_port().and_then(|(switch_end, gateway_end)| {
        let dns = DnsServer::start(&net.name, upstreams)?;
        // The gateway speaks for many addresses (NAT replies): no port security.
        let port = ctx
            .dp
            .add_port(id, GATEWAY_PORT.to_string(), switch_end, None)?;
        match Gateway::start(config, gateway_end, dns) {
            Ok(gw) => Ok((port, gw)),
            Err(e) => {
                ctx.dp.remove_port(port);
                Err(e)
            }
        }
    });
    match started {
        Ok(gw) => {
            ctx.gateways.insert(net.name.clone(), gw);
            Ok(())
        }
        Err(e) => {
            if let Some(id) = ctx.nets.remove(&net.name) {
                ctx.dp.remove_network(id);
            }
            Err(e)
        }
    }
}

/// Create the endpoint's TAP in the sandbox and wire it to the switch.
pub fn add_tap(
    ctx: &mut Ctx<'_>,
    netns: &Path,
    sandbox: &str,
    ep: &Endpoint,
    net: &Network,
) -> Result<()> {
    let (Some(interface), Some(mac), Some(ipv4), Some(subnet)) =
        (ep.interface.clone(), ep.mac, ep.ipv4, net.subnet)
    else {
        return Ok(());
    };
    let net_id = *ctx
        .nets
        .get(&net.name)
        .ok_or_else(|| Error::not_found("network", &net.name))?;
    let fds = wiring::create_tap(
        netns,
        TapSpec {
            interface: interface.clone(),
            mac,
            ipv4,
            prefix: subnet.prefix,
            mtu: net.mtu,
            offload: if net.offload {
                ctx.offload
            } else {
                Offload::Off
            },
            queues: ctx.dp.tap_queues(),
        },
    )?;
    let label = format!("{sandbox}/{interface}");
    let policy = BridgeOptions::parse(&net.options)
        .map(|o| o.port_security)
        .unwrap_or(true)
        .then_some(PortPolicy { mac, ipv4 });
    let port = ctx.dp.add_port_queues(net_id, label, fds, policy)?;
    ctx.ports.insert((sandbox.to_string(), interface), port);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_over_defaults_and_refuse_bad_values() {
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
}
