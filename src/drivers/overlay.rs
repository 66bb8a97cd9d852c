//! The overlay driver: a bridge network (switch, TAPs, local gateway) whose L2 domain spans
//! hosts over VXLAN. Its switch has one more port, the network's VTEP (`datapath::vtep`), which
//! carries frames to and from the other hosts' VTEPs, found from static peers
//! (`--opt peers=`).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::bridge::{self, BridgeOptions};
use super::{Ctx, Device, DevicePlan, NetOptions, NetworkDriver, Options, Switch, check_keys};
use crate::control::model::{Endpoint, Network};
use crate::datapath::fdb::PortId;
use crate::datapath::vtep::{NetworkSpec, RemoteRow, Vtep, VtepStats};
use crate::datapath::vxlan;
use crate::error::{Error, Result};
use crate::wire::MacAddr;

/// The underlay's 1500 minus the 50 bytes VXLAN over IPv4 adds.
pub const DEFAULT_MTU: u32 = 1500 - vxlan::OVERHEAD;
/// The same with IPv6 VTEPs: 70 bytes.
pub const DEFAULT_MTU6: u32 = 1500 - vxlan::OVERHEAD6;
/// VNIs handed out when `--vni` is left out start here (as libnetwork's overlay does).
pub const FIRST_AUTO_VNI: u32 = 256;
/// Label of a network's VTEP port in `stats` and `fdb`.
pub const VTEP_PORT: &str = "vtep";

pub use super::options::{OverlayOptions, parse_vtep_addr};

/// An overlay network's `--opt` keys: the bridge's and its own.
pub fn keys() -> Vec<&'static str> {
    // No host interface: an overlay spans hosts, and its addresses are shared among them.
    let mut k: Vec<&str> = bridge::KEYS
        .iter()
        .copied()
        .filter(|k| !bridge::HOST_ACCESS_KEYS.contains(k))
        .collect();
    k.extend(["vtep", "peers"]);
    k
}

/// The daemon's VTEPs, one per bound address, and which overlay network uses which.
pub struct Vteps {
    /// `--vtep`: the address of networks that do not name one.
    pub default: Option<SocketAddr>,
    vteps: HashMap<SocketAddr, Vtep>,
    /// Network name -> (its VTEP's address, its VTEP port on the switch, its VNI).
    members: HashMap<String, (SocketAddr, crate::datapath::fdb::PortId, u32)>,
}

/// What `network inspect` shows of an overlay network.
pub struct OverlayReport {
    pub vtep: SocketAddr,
    pub remotes: Vec<RemoteRow>,
    pub stats: std::sync::Arc<VtepStats>,
}

impl Vteps {
    pub fn new(default: Option<SocketAddr>) -> Self {
        Vteps {
            default,
            vteps: HashMap::new(),
            members: HashMap::new(),
        }
    }

    /// Hand a network's VTEP what the cluster store knows of the other hosts.
    pub fn set_cluster(&self, network: &str, view: crate::datapath::vtep::ClusterView) {
        if let Some((addr, _, vni)) = self.members.get(network)
            && let Some(vtep) = self.vteps.get(addr)
        {
            vtep.set_cluster(*vni, view);
        }
    }

    pub fn report(&self, network: &str) -> Option<OverlayReport> {
        let (addr, _, vni) = self.members.get(network)?;
        let vtep = self.vteps.get(addr)?;
        Some(OverlayReport {
            vtep: *addr,
            remotes: vtep.remotes(*vni),
            stats: vtep.stats.clone(),
        })
    }
}

pub struct Overlay;

impl NetworkDriver for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }
    fn check_create(&self) -> Result<()> {
        Ok(())
    }
    fn validate(&self, options: &Options) -> Result<NetOptions> {
        check_keys(self.name(), options, &keys())?;
        let bridge = BridgeOptions::parse(options)?;
        Ok(NetOptions {
            mac_aging_s: bridge.mac_aging_s,
            bridge: Some(bridge),
            overlay: Some(OverlayOptions::parse(options)?),
        })
    }
    fn switched(&self) -> bool {
        true
    }
    fn has_vni(&self) -> bool {
        true
    }
    fn default_mtu(&self) -> u32 {
        DEFAULT_MTU
    }
    fn in_cluster_store(&self) -> bool {
        true
    }
    fn settle(&self, ctx: &Ctx<'_>, net: &mut Network) {
        let own = net
            .typed
            .as_ref()
            .and_then(|t| t.overlay.as_ref())
            .and_then(|o| o.vtep);
        let Some(vtep) = own.or(ctx.overlay.default) else {
            return;
        };
        // The MTU was planned before the VTEP was known: an IPv6 underlay's header is 20
        // bytes longer, so the default shrinks with it (an --mtu other than it is kept).
        if vtep.is_ipv6() && net.mtu == DEFAULT_MTU {
            net.mtu = DEFAULT_MTU6;
        }
        if own.is_some() {
            return;
        }
        net.options.insert("vtep".to_string(), vtep.to_string());
        if let Some(o) = net.typed.as_mut().and_then(|t| t.overlay.as_mut()) {
            o.vtep = Some(vtep);
        }
    }
    fn attach_tap(&self, ctx: &Ctx<'_>, net: &Network, tap: bridge::Tap) -> Result<PortId> {
        bridge::attach(ctx, net, tap)
    }
    fn setup_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        let opts = options_of(net)?.clone();
        let vni = net
            .vni
            .ok_or_else(|| Error::invalid(format!("overlay network {} has no VNI", net.name)))?;
        let addr = opts.vtep.or(ctx.overlay.default).ok_or_else(|| {
            Error::invalid(format!(
                "overlay network {} needs a VTEP: start the daemon with --vtep ADDR[:PORT] or pass --opt vtep=ADDR[:PORT]",
                net.name
            ))
        })?;
        super::options::check_families(addr, &opts.peers)
            .map_err(|e| Error::invalid(format!("overlay network {}: {e}", net.name)))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = ctx.overlay.vteps.entry(addr) {
            slot.insert(Vtep::start(addr, ctx.dp)?);
        }
        bridge::add_switch(ctx, net).inspect_err(|_| drop_if_unused(ctx, addr))?;
        let attached = bridge::gateway_port().and_then(|(switch_end, vtep_end)| {
            let id = *ctx
                .nets
                .get(&net.name)
                .ok_or_else(|| Error::not_found("network", &net.name))?;
            let vtep = ctx
                .overlay
                .vteps
                .get(&addr)
                .ok_or_else(|| Error::not_found("VTEP", addr.to_string()))?;
            let overlay = vtep.network(NetworkSpec {
                vni,
                fd: vtep_end,
                peers: opts.peers.clone(),
                mtu: net.mtu as usize,
                aging: std::time::Duration::from_secs(u64::from(net.mac_aging_s)),
                gateway_mac: net.gateway.map(MacAddr::from_ipv4),
                // Super-frames only where the TAPs take them.
                coalesce: net.offload && ctx.offload != crate::netns::tap::Offload::Off,
            });
            // Remote stations send as themselves: no port security on the VTEP port.
            let port =
                ctx.dp
                    .add_overlay_port(id, VTEP_PORT.to_string(), switch_end, overlay.clone())?;
            vtep.attach(port, overlay);
            Ok(port)
        });
        let port = match attached {
            Ok(port) => port,
            Err(e) => {
                let sw = bridge_take(ctx, &net.name);
                stop(ctx, sw);
                drop_if_unused(ctx, addr);
                return Err(e);
            }
        };
        ctx.overlay
            .members
            .insert(net.name.clone(), (addr, port, vni));
        Ok(())
    }
    fn take_network(&self, ctx: &mut Ctx<'_>, name: &str) -> Switch {
        let mut sw = bridge_take(ctx, name);
        if let Some((addr, port, vni)) = ctx.overlay.members.remove(name) {
            if let Some(vtep) = ctx.overlay.vteps.get_mut(&addr) {
                vtep.remove_network(vni);
            }
            drop_if_unused(ctx, addr);
            sw.ports.push(port);
        }
        sw
    }
    fn plan_device(&self, ctx: &Ctx<'_>, ep: &Endpoint, net: &Network) -> Result<DevicePlan> {
        bridge::plan_tap(ctx, ep, net)
    }
    fn attach_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        sandbox: &str,
        ep: &Endpoint,
        net: &Network,
        device: Device,
    ) -> Result<()> {
        bridge::attach_endpoint_tap(ctx, sandbox, ep, net, device)
    }
}

/// An overlay network's own options (as validated with it).
pub fn options_of(net: &Network) -> Result<&OverlayOptions> {
    net.opts()?.overlay.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "network {} (driver {}) has no overlay options",
            net.name,
            net.driver.name()
        ))
    })
}

fn bridge_take(ctx: &mut Ctx<'_>, name: &str) -> Switch {
    Switch {
        gateway: ctx.gateways.remove(name),
        ports: Vec::new(),
        net: ctx.nets.remove(name),
    }
}

/// Stop a switch at once (a failed setup: nothing waits on it).
fn stop(ctx: &mut Ctx<'_>, sw: Switch) {
    if let Some((port, gateway)) = sw.gateway {
        drop(gateway);
        ctx.dp.remove_port(port);
    }
    if let Some(id) = sw.net {
        ctx.dp.remove_network(id);
    }
}

/// Stop a VTEP no network uses any more, freeing its address.
fn drop_if_unused(ctx: &mut Ctx<'_>, addr: SocketAddr) {
    if ctx.overlay.vteps.get(&addr).is_some_and(Vtep::is_empty) {
        ctx.overlay.vteps.remove(&addr);
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
    fn overlay_takes_bridge_keys_and_its_own_only() {
        let d = Overlay;
        assert!(
            d.validate(&opts(&[("mac_aging", "5"), ("peers", "127.0.0.3")]))
                .is_ok()
        );
        assert!(d.validate(&opts(&[("colour", "blue")])).is_err());
        assert!(
            super::super::bridge::Bridge
                .validate(&opts(&[("peers", "127.0.0.3")]))
                .is_err()
        );
        assert_eq!(DEFAULT_MTU, 1450);
        assert_eq!(DEFAULT_MTU6, 1430);
    }
}
