//! The bridge driver: a userspace L2 switch per network, TAP endpoints in the sandboxes, and a
//! gateway (NAT, DNS, published ports) on a socketpair port of the switch.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{Ctx, Device, DevicePlan, NetOptions, NetworkDriver, Options, Switch, check_keys};
use crate::control::model::{Endpoint, Network};
use crate::control::wiring::TapSpec;
use crate::datapath::fdb::PortId;
use crate::datapath::inbox::Inbox;
use crate::datapath::security::PortPolicy;
use crate::error::{Context, Error, Result};
use crate::gateway::dns::DnsServer;
use crate::gateway::{Gateway, GatewayConfig, GatewayV4, GatewayV6};
use crate::netns::tap::Offload;
use crate::wire::MacAddr;

pub use super::options::BridgeOptions;

/// Label of a network's gateway port in `stats` and `fdb`.
pub const GATEWAY_PORT: &str = "gateway";
/// Frames a gateway may have waiting for the switch: a 1 MiB window of 64 KiB segments and
/// more. Buffers grow only as frames need them.
const GATEWAY_INBOX_FRAMES: usize = 32;

/// Label of a network's host port (`host_access=on`) in `stats` and `fdb`.
pub const HOST_PORT: &str = "host";

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
    // Reachability of and from the host.
    "host_loopback",
    "host_access",
    "host_ip",
    "host_ip6",
    // Inter-sandbox policy (datapath/policy.rs).
    "icc",
    super::options::DOCKER_ICC,
    "policy_default",
    "policy_flows",
];

/// Keys of the host's interface (`host_access`): a bridge network's own, not an overlay's.
pub const HOST_ACCESS_KEYS: &[&str] = &["host_access", "host_ip", "host_ip6"];

pub struct Bridge;

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }
    fn check_create(&self) -> Result<()> {
        Ok(())
    }
    fn validate(&self, options: &Options) -> Result<NetOptions> {
        check_keys(self.name(), options, KEYS)?;
        let bridge = BridgeOptions::parse(options)?;
        Ok(NetOptions {
            mac_aging_s: bridge.mac_aging_s,
            bridge: Some(bridge),
            overlay: None,
        })
    }
    fn switched(&self) -> bool {
        true
    }
    fn attach_tap(&self, ctx: &Ctx<'_>, net: &Network, tap: Tap) -> Result<PortId> {
        attach(ctx, net, tap)
    }
    fn setup_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        add_switch(ctx, net)
    }
    fn take_network(&self, ctx: &mut Ctx<'_>, name: &str) -> Switch {
        Switch {
            gateway: ctx.gateways.remove(name),
            // The host's interface goes with its port's fds.
            ports: ctx.ports.remove(&host_port_key(name)).into_iter().collect(),
            net: ctx.nets.remove(name),
        }
    }
    fn plan_device(&self, ctx: &Ctx<'_>, ep: &Endpoint, net: &Network) -> Result<DevicePlan> {
        plan_tap(ctx, ep, net)
    }
    fn attach_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        sandbox: &str,
        ep: &Endpoint,
        net: &Network,
        device: Device,
    ) -> Result<()> {
        attach_endpoint_tap(ctx, sandbox, ep, net, device)
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
    let opts = options_of(net)?.clone();
    let id = ctx.dp.add_network(&net.name, net.mtu, net.mac_aging_s);
    ctx.nets.insert(net.name.clone(), id);
    if let Some(dp_net) = ctx.dp.network(id) {
        dp_net.fdb.set_port_limit(opts.max_macs_per_port);
    }
    let ipv4 = net
        .subnet
        .zip(net.gateway)
        .map(|(subnet, ip)| GatewayV4 { subnet, ip });
    let ipv6 = net
        .subnet6
        .zip(net.gateway6)
        .map(|(subnet, ip)| GatewayV6 { subnet, ip });
    // The gateway's MAC is made of its IPv4 address, or on an IPv6-only network of its IPv6
    // address's last 32 bits, as its endpoints' are.
    let mac = match (ipv4, ipv6) {
        (Some(v4), _) => MacAddr::from_ipv4(v4.ip),
        (None, Some(v6)) => MacAddr::from_ipv4(Ipv4Addr::from(u128::from(v6.ip) as u32)),
        (None, None) => return Ok(()),
    };
    let config = GatewayConfig {
        network: net.name.clone(),
        ipv4,
        mac,
        mtu: net.mtu,
        nat: !net.internal,
        policy: ctx.nat_policy.clone(),
        host_loopback: opts.host_loopback,
        udp_idle: std::time::Duration::from_secs(u64::from(opts.udp_idle_s)),
        limits: opts.nat,
        dns: None,
        ipv6,
        spin: ctx.dp.spin(),
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
                std::net::IpAddr::V6(ip) => ctx.nat_policy.allows_v6(ip),
            })
            .copied()
            .collect()
    };
    let started = gateway_port().and_then(|(switch_end, gateway_end)| {
        let dns = DnsServer::start_with(&net.name, upstreams, Some(ctx.nat_policy.clone()))?;
        // The gateway speaks for many addresses (NAT replies): no port security. Its frames
        // reach the switch through memory (`datapath/inbox.rs`), the switch's through the
        // socketpair.
        let inbox = Arc::new(
            Inbox::new(GATEWAY_INBOX_FRAMES).context(|| "create the gateway's inbox".into())?,
        );
        let port =
            ctx.dp
                .add_inbox_port(id, GATEWAY_PORT.to_string(), switch_end, inbox.clone())?;
        match Gateway::start_with(config, gateway_end, Some(inbox), dns) {
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
        }
        Err(e) => {
            if let Some(id) = ctx.nets.remove(&net.name) {
                ctx.dp.remove_network(id);
            }
            return Err(e);
        }
    }
    if opts.host_access {
        match add_host_port(ctx, net, &opts) {
            Ok(port) => {
                ctx.ports.insert(host_port_key(&net.name), port);
            }
            Err(e) => {
                // Undo the switch and its gateway: the network is not made (or not restored).
                if let Some((port, gw)) = ctx.gateways.remove(&net.name) {
                    drop(gw);
                    ctx.dp.remove_port(port);
                }
                if let Some(id) = ctx.nets.remove(&net.name) {
                    ctx.dp.remove_network(id);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Where a network's host port is kept among the endpoints' ports: no sandbox has an empty
/// name.
fn host_port_key(network: &str) -> (String, String) {
    (String::new(), network.to_string())
}

/// The name of network `network`'s interface in the host's namespace: `tn-NAME` when that
/// fits in 15 bytes, else `tn-`, the name's first 6 bytes, `-` and 5 hex digits of a stable
/// hash (FNV-1a) of the whole name, so long names that share a beginning still differ.
pub fn host_interface(network: &str) -> String {
    let plain = format!("tn-{network}");
    if plain.len() < libc::IFNAMSIZ {
        return plain;
    }
    let hash = network.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut head = String::new();
    for c in network.chars() {
        if head.len() + c.len_utf8() > 6 {
            break;
        }
        head.push(c);
    }
    format!("tn-{head}-{:05x}", hash & 0xf_ffff)
}

/// Make the host's TAP of a `host_access` network in the daemon's namespace, with the
/// addresses its options keep, and wire it to the switch as a station under port security.
fn add_host_port(ctx: &Ctx<'_>, net: &Network, opts: &BridgeOptions) -> Result<PortId> {
    let ipv4 = net.subnet.and(opts.host_ip);
    let ipv6 = net.subnet6.and(opts.host_ip6);
    let mac = match (ipv4, ipv6) {
        (Some(v4), _) => MacAddr::from_ipv4(v4),
        (None, Some(v6)) => MacAddr::from_ipv4(Ipv4Addr::from(u128::from(v6) as u32)),
        (None, None) => {
            return Err(Error::invalid(format!(
                "network {}: host_access=on but no host address (host_ip, host_ip6)",
                net.name
            )));
        }
    };
    let interface = host_interface(&net.name);
    let spec = tap_spec(ctx, net, interface.clone(), mac, ipv4, ipv6)?;
    let fds = crate::control::wiring::create_host_access_tap(spec).map_err(|e| {
        Error::invalid(format!(
            "network {}: host interface {interface}: {e}",
            net.name
        ))
    })?;
    let net_id = *ctx
        .nets
        .get(&net.name)
        .ok_or_else(|| Error::not_found("network", &net.name))?;
    let policy = port_policy(net, mac, ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED), ipv6)?;
    ctx.dp
        .add_host_port(net_id, HOST_PORT.to_string(), fds, policy)
}

/// A switched network's bridge options (as validated with it).
pub fn options_of(net: &Network) -> Result<&BridgeOptions> {
    net.opts()?.bridge.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "network {} (driver {}) has no switch options",
            net.name,
            net.driver.name()
        ))
    })
}

/// The policy of a station's switch port: with port security on (the network's option), it may
/// send only as `mac`, `ipv4` and `ipv6` (and the link-local address of `mac`).
pub fn port_policy(
    net: &Network,
    mac: MacAddr,
    ipv4: Ipv4Addr,
    ipv6: Option<std::net::Ipv6Addr>,
) -> Result<Option<PortPolicy>> {
    // A /64 is what SLAAC configures from (the gateway's RAs mark only those autonomous).
    let slaac = net
        .subnet6
        .filter(|s| s.prefix == 64)
        .map(|s| crate::wire::ipv6::slaac_address(s.addr, mac));
    Ok(options_of(net)?.port_security.then_some(PortPolicy {
        mac,
        ipv4,
        ipv6,
        slaac,
    }))
}

/// How a TAP endpoint's device is planned on `net`: its MTU, offloads and queues.
pub fn tap_spec(
    ctx: &Ctx<'_>,
    net: &Network,
    interface: String,
    mac: MacAddr,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
) -> Result<TapSpec> {
    let no_subnet = || Error::invalid(format!("network {} has no subnet", net.name));
    let ipv4 = match ipv4 {
        Some(ip) => Some((ip, net.subnet.ok_or_else(no_subnet)?.prefix)),
        None => None,
    };
    let ipv6 = match ipv6 {
        Some(ip) => Some((ip, net.subnet6.ok_or_else(no_subnet)?.prefix)),
        None => None,
    };
    if ipv4.is_none() && ipv6.is_none() {
        return Err(no_subnet());
    }
    Ok(TapSpec {
        interface,
        mac,
        ipv4,
        ipv6,
        mtu: net.mtu,
        offload: offload_of(ctx, net),
        queues: ctx.dp.tap_queues(),
    })
}

/// The offloads of `net`'s TAPs: the daemon's, unless the network turns them off.
pub fn offload_of(ctx: &Ctx<'_>, net: &Network) -> Offload {
    if net.offload {
        ctx.offload
    } else {
        Offload::Off
    }
}

/// A TAP endpoint to wire to a switch, however it was made (a sandbox's, a CNI runtime's, a
/// Docker container's).
pub struct Tap {
    /// The port's label in `stats` and `fdb`.
    pub label: String,
    /// The station the port speaks for (port security).
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on a network with an IPv6 subnet (its link-local is always allowed).
    pub ipv6: Option<std::net::Ipv6Addr>,
    pub fds: TapFds,
}

pub enum TapFds {
    /// A sandbox's or CNI runtime's TAP, opened with `tap_queues()` queues.
    Queues(Vec<OwnedFd>),
    /// A single-queue TAP (Docker's).
    One(OwnedFd),
}

/// Wire a TAP to `net`'s switch with the port security the network's options ask for.
pub fn attach(ctx: &Ctx<'_>, net: &Network, tap: Tap) -> Result<PortId> {
    let net_id = *ctx
        .nets
        .get(&net.name)
        .ok_or_else(|| Error::not_found("network", &net.name))?;
    let policy = port_policy(net, tap.mac, tap.ipv4, tap.ipv6)?;
    match tap.fds {
        TapFds::Queues(fds) => ctx.dp.add_port_queues(net_id, tap.label, fds, policy),
        TapFds::One(fd) => ctx.dp.add_port(net_id, tap.label, fd, policy),
    }
}

/// Plan the endpoint's TAP in the sandbox: checked before a device is made.
pub fn plan_tap(ctx: &Ctx<'_>, ep: &Endpoint, net: &Network) -> Result<DevicePlan> {
    let (Some(interface), Some(mac)) = (ep.interface.clone(), ep.mac) else {
        return Ok(DevicePlan::default());
    };
    if ep.ipv4.is_none() && ep.ipv6.is_none() {
        return Ok(DevicePlan::default());
    }
    options_of(net)?;
    if !ctx.nets.contains_key(&net.name) {
        return Err(Error::not_found("network", &net.name));
    }
    Ok(DevicePlan::tap(tap_spec(
        ctx, net, interface, mac, ep.ipv4, ep.ipv6,
    )?))
}

/// Wire the endpoint's TAP, made from `plan_tap`'s plan, to the switch.
pub fn attach_endpoint_tap(
    ctx: &mut Ctx<'_>,
    sandbox: &str,
    ep: &Endpoint,
    net: &Network,
    device: Device,
) -> Result<()> {
    let (Some(interface), Some(mac)) = (ep.interface.clone(), ep.mac) else {
        return Ok(());
    };
    if device.fds.is_empty() {
        return Ok(());
    }
    // The keeper holds the queues too, so that the TAP outlives a `kill -9` of the daemon
    // (the same files again after a restart: it replaces what it had).
    let key = crate::keeper::client::endpoint_key(sandbox, &interface);
    crate::keeper::client::put(&key, &device.fds);
    let port = attach(
        ctx,
        net,
        Tap {
            label: format!("{sandbox}/{interface}"),
            mac,
            // An IPv6-only endpoint sends no IPv4: port security admits none from it.
            ipv4: ep.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            ipv6: ep.ipv6,
            fds: TapFds::Queues(device.fds),
        },
    )
    .inspect_err(|_| crate::keeper::client::forget(&key))?;
    ctx.ports.insert((sandbox.to_string(), interface), port);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::Driver;

    fn net(options: &[(&str, &str)]) -> Network {
        let options: Options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Network {
            typed: Bridge.validate(&options).ok(),
            options,
            ..Network::for_test("n", Driver::Bridge)
        }
    }

    #[test]
    fn host_interfaces_are_tn_and_the_name_or_a_stable_hash_of_a_long_one() {
        assert_eq!(host_interface("backend"), "tn-backend");
        assert_eq!(host_interface("twelve-chars"), "tn-twelve-chars");
        let long = host_interface("thirteen-char");
        assert_eq!(long.len(), 15, "{long}");
        assert!(long.starts_with("tn-thirte-"), "{long}");
        assert_eq!(long, host_interface("thirteen-char"), "stable");
        assert_ne!(
            host_interface("thirteen-chas"),
            long,
            "names that share a beginning"
        );
        // Multi-byte characters are never cut in half.
        let wide = host_interface("ééééééééééé");
        assert!(wide.len() < libc::IFNAMSIZ, "{wide}");
    }

    #[test]
    fn port_security_comes_from_the_validated_options_never_a_fallback() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(10, 0, 0, 2));
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        assert!(port_policy(&net(&[]), mac, ip, None).unwrap().is_some());
        assert!(
            port_policy(&net(&[("port_security", "off")]), mac, ip, None)
                .unwrap()
                .is_none()
        );
        // Not validated (a bad value never gets this far): an error, not "on".
        let bad = net(&[("port_security", "maybe")]);
        assert!(bad.typed.is_none());
        let err = port_policy(&bad, mac, ip, None).unwrap_err().to_string();
        assert!(err.contains("not validated"), "{err}");
    }
}
