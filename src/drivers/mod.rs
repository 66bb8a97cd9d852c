//! The driver seam, as netavark's `NetworkDriver`: each driver checks its own `--opt` keys and
//! sets up and tears down the datapath side of its networks and endpoints. The controller keeps
//! the model, IPAM, persistence and the order of steps, and asks the driver for the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::control::model::{Driver, Endpoint, Network, Sandbox, State};
use crate::control::wiring::{self, TapSpec};
use crate::datapath::Datapath;
use crate::datapath::fdb::PortId;
use crate::datapath::port::NetId;
use crate::error::{Error, Result};
use crate::gateway::Gateway;
use crate::gateway::policy::NatPolicy;
use crate::netns::tap::Offload;
use crate::wire::MacAddr;

pub mod bridge;
pub mod host;
pub mod null;
pub mod options;
pub mod overlay;
pub mod remote;

pub use options::{NetOptions, Options, check_keys};

/// A network's datapath side as it leaves the controller's maps: its gateway (with the
/// gateway's switch port), other ports the driver made (a VTEP's), and its datapath id. A
/// teardown stops them.
#[derive(Default)]
pub struct Switch {
    pub gateway: Option<(PortId, Gateway)>,
    pub ports: Vec<PortId>,
    pub net: Option<NetId>,
}

/// An endpoint's side as it leaves the controller's maps (`take_endpoint`): its switch port,
/// and the plugin that still has to hear of it. Run without the controller's lock.
#[derive(Default)]
pub struct Unwired {
    pub port: Option<PortId>,
    /// A remote network's endpoint: where plugins are looked for, the endpoint, its network.
    pub plugin: Option<(Vec<PathBuf>, Endpoint, Network)>,
}

impl Unwired {
    /// Remove the port (waiting for every worker to drop it) and tell the plugin.
    pub fn run(self, dp: &Datapath) {
        if let Some(port) = self.port {
            dp.remove_port(port);
        }
        if let Some((dirs, ep, net)) = self.plugin
            && let Err(e) = remote::teardown(&dirs, &ep, &net)
        {
            eprintln!("tapnet: endpoint {} on network {}: {e}", ep.id, net.name);
        }
    }
}

/// An endpoint's device as its driver planned it under the controller's lock, with what it
/// needs copied out of the `Ctx`: made without the lock (`make`), attached under it again
/// (`NetworkDriver::attach_endpoint`).
#[derive(Default)]
pub struct DevicePlan {
    tap: Option<TapSpec>,
}

impl DevicePlan {
    /// A TAP in the sandbox's namespace.
    pub fn tap(spec: TapSpec) -> Self {
        DevicePlan { tap: Some(spec) }
    }

    /// Make the device in the namespace at `netns` (slow: a thread enters the namespace).
    /// Dropping the result removes what was made.
    /// After a `kill -9` of the daemon the TAP may still be there, its queues kept by the fd
    /// keeper: those are taken as they are (no new TAP, no reconfiguration), so that the
    /// sandbox's connections carry on.
    pub fn make(self, netns: &Path) -> Result<Device> {
        let Some(spec) = self.tap else {
            return Ok(Device::default());
        };
        if let Some(fds) = kept_tap(netns, &spec) {
            return Ok(Device { fds });
        }
        Ok(Device {
            fds: wiring::create_tap(netns, spec)?,
        })
    }
}

/// The queues of the endpoint's TAP the fd keeper gave back, if they still are that TAP's, with
/// as many queues as the datapath polls; otherwise the keeper's copies are closed, and the
/// TAP is made anew.
fn kept_tap(netns: &Path, spec: &TapSpec) -> Option<Vec<std::os::fd::OwnedFd>> {
    let sandbox = netns.file_name()?.to_str()?;
    let key = crate::keeper::client::endpoint_key(sandbox, &spec.interface);
    let fds = crate::keeper::client::take_restored(&key)?;
    match crate::netns::tap::reuse_queues(&spec.interface, spec.offload, spec.queues, &fds) {
        Ok(()) => {
            crate::keeper::client::mark_reused(&key);
            Some(fds)
        }
        Err(e) => {
            eprintln!("tapnet: making the TAP of {key} anew: {e}");
            // The keeper's references first, then ours: the old TAP goes.
            crate::keeper::client::forget(&key);
            drop(fds);
            None
        }
    }
}

/// An endpoint's device, made and not yet attached: its TAP's queues (none: the endpoint has
/// no device of tapnet's making). The TAP goes with its last fd.
#[derive(Default)]
pub struct Device {
    pub fds: Vec<std::os::fd::OwnedFd>,
}

/// What a driver may touch while it sets up or tears down: the controller's datapath maps,
/// borrowed for one call.
pub struct Ctx<'a> {
    pub dp: &'a Arc<Datapath>,
    pub offload: Offload,
    /// Datapath ids of switched networks.
    pub nets: &'a mut HashMap<String, NetId>,
    /// Switch ports of endpoints, by (sandbox, interface).
    pub ports: &'a mut HashMap<(String, String), PortId>,
    /// The gateway of each switched network and its switch port.
    pub gateways: &'a mut HashMap<String, (PortId, Gateway)>,
    pub nat_policy: &'a NatPolicy,
    pub dns_upstreams: &'a [SocketAddr],
    /// VTEPs and the overlay networks on them.
    pub overlay: &'a mut overlay::Vteps,
    /// Where `remote:NAME` plugins are looked for.
    pub plugin_dirs: &'a [PathBuf],
}

pub trait NetworkDriver: Sync {
    fn name(&self) -> &'static str;

    /// May a user create a network of this driver? Host and null exist once, built in.
    fn check_create(&self) -> Result<()>;

    /// Check `--opt` keys and values (an unknown key is an error) and return them typed: the
    /// one place a network's option map is parsed.
    fn validate(&self, options: &Options) -> Result<NetOptions>;

    /// Do endpoints get a TAP, a MAC, an address and a switch port (and the network a switch
    /// and a gateway)?
    fn switched(&self) -> bool {
        false
    }

    /// Do endpoints get an interface and an address from tapnet's IPAM? Such endpoints may
    /// join and leave a running sandbox.
    fn addressed(&self) -> bool {
        self.switched()
    }

    /// Has the network a gateway (an address, NAT and DNS) that sandboxes route and resolve
    /// through?
    fn has_gateway(&self) -> bool {
        self.switched()
    }

    /// May its sandboxes publish ports (`-p`) through the network's gateway?
    fn publishes_ports(&self) -> bool {
        self.has_gateway()
    }

    /// Have endpoints switch links that `tapnet link` can impair and block?
    fn supports_impairments(&self) -> bool {
        self.switched()
    }

    /// Does the network take TAPs made by others (CNI runtimes, Docker)?
    fn takes_taps(&self) -> bool {
        self.switched()
    }

    /// May a sandbox on this network be on other networks too?
    fn combines(&self) -> bool {
        self.switched()
    }

    /// Does a sandbox on this network share the daemon's network namespace?
    fn shares_host(&self) -> bool {
        false
    }

    /// Is the network served by a plugin outside the daemon (named by `remote:NAME`), which
    /// the controller calls without its lock and asks about endpoints (EndpointOperInfo)?
    fn plugin_served(&self) -> bool {
        false
    }

    /// Does the driver set a sandbox's routes itself (a plugin's Join), not the controller?
    fn routes_itself(&self) -> bool {
        false
    }

    /// Does a network have a VNI (and its default MTU leave room for encapsulation)?
    fn has_vni(&self) -> bool {
        false
    }

    /// The MTU of a network created without `--mtu`.
    fn default_mtu(&self) -> u32 {
        crate::control::model::DEFAULT_MTU
    }

    /// Are the network and its endpoints' addresses shared with other hosts through the
    /// cluster store (`daemon --store`)?
    fn in_cluster_store(&self) -> bool {
        false
    }

    /// Pin on a new network what it keeps whatever a restarted daemon's flags say (an overlay
    /// network's VTEP, which its peers know it by).
    fn settle(&self, _ctx: &Ctx<'_>, _net: &mut Network) {}

    /// Tell whoever serves the network that it is being created (on create only, before
    /// `setup_network`); an error fails the create. Called without the controller's lock.
    fn create_network(&self, _plugin_dirs: &[PathBuf], _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Tell whoever serves the network that it is being removed; an error keeps it. Called
    /// without the controller's lock.
    fn delete_network(&self, _plugin_dirs: &[PathBuf], _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Start the datapath side of a network (on create and on restore).
    fn setup_network(&self, _ctx: &mut Ctx<'_>, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Take the network's datapath side out of the maps; the caller's teardown stops it.
    fn take_network(&self, ctx: &mut Ctx<'_>, name: &str) -> Switch {
        Switch {
            gateway: ctx.gateways.remove(name),
            ports: Vec::new(),
            net: ctx.nets.remove(name),
        }
    }

    /// Create the endpoint's device in the sandbox's namespace at `netns` and attach it, all
    /// under the controller's lock (on restore, and for drivers without a plan of their own).
    /// Returns the MAC the device got when it is not the planned one (a remote plugin's).
    fn setup_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        netns: &Path,
        sandbox: &str,
        ep: &Endpoint,
        net: &Network,
    ) -> Result<Option<MacAddr>> {
        let device = self.plan_device(ctx, ep, net)?.make(netns)?;
        self.attach_endpoint(ctx, sandbox, ep, net, device)?;
        Ok(None)
    }

    /// Check that the endpoint can be set up and plan its device (under the controller's
    /// lock); `DevicePlan::make` makes it without the lock.
    fn plan_device(&self, _ctx: &Ctx<'_>, _ep: &Endpoint, _net: &Network) -> Result<DevicePlan> {
        Ok(DevicePlan::default())
    }

    /// Attach a device made from this driver's plan (under the controller's lock). On failure
    /// the device is dropped, and goes.
    fn attach_endpoint(
        &self,
        _ctx: &mut Ctx<'_>,
        _sandbox: &str,
        _ep: &Endpoint,
        _net: &Network,
        _device: Device,
    ) -> Result<()> {
        Ok(())
    }

    /// The part of `setup_endpoint` that calls out of the daemon (a plugin's CreateEndpoint
    /// and Join, and the link it made moved in), made without the controller's lock.
    fn setup_endpoint_outside(
        &self,
        _plugin_dirs: &[PathBuf],
        _netns: &Path,
        _ep: &Endpoint,
        _net: &Network,
    ) -> Result<Option<MacAddr>> {
        Ok(None)
    }

    /// Wire a TAP made elsewhere (a CNI runtime's, a Docker container's) to the network's
    /// switch.
    fn attach_tap(&self, _ctx: &Ctx<'_>, net: &Network, _tap: bridge::Tap) -> Result<PortId> {
        Err(Error::invalid(format!(
            "network {} (driver {}) takes no TAPs",
            net.name,
            self.name()
        )))
    }

    /// Take a TAP `attach_tap` wired (CNI DEL, Docker Leave, or a failed commit after it) out
    /// of the driver's hands; the returned `Unwired` removes it, run without the controller's
    /// lock.
    fn detach_tap(&self, _ctx: &Ctx<'_>, port: PortId) -> Unwired {
        Unwired {
            port: Some(port),
            plugin: None,
        }
    }

    /// Take the endpoint's side out of the maps; the returned `Unwired` removes it, and tells
    /// whoever serves the network, when run without the controller's lock.
    fn take_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        sandbox: &str,
        ep: &Endpoint,
        _net: &Network,
    ) -> Unwired {
        Unwired {
            port: ep.interface.clone().and_then(|i| {
                // The keeper lets go of the TAP before the port's fds close.
                crate::keeper::client::forget(&crate::keeper::client::endpoint_key(sandbox, &i));
                ctx.ports.remove(&(sandbox.to_string(), i))
            }),
            plugin: None,
        }
    }
}

/// The implementation of a driver named in the model.
pub fn of(driver: Driver) -> &'static dyn NetworkDriver {
    match driver {
        Driver::Bridge => &bridge::Bridge,
        Driver::Host => &host::Host,
        Driver::Null => &null::Null,
        Driver::Overlay => &overlay::Overlay,
        Driver::Remote => &remote::Remote,
    }
}

/// The driver `--driver NAME` names (`remote:PLUGIN` for a plugin's).
pub fn named(name: &str) -> Result<Driver> {
    Driver::parse(name).map_err(Error::Invalid)
}

/// Does `sb` share the daemon's network namespace (`--net host`)? Such a sandbox has no
/// namespaces of its own.
pub fn shares_host(state: &State, sb: &Sandbox) -> bool {
    sb.endpoints.iter().any(|e| {
        state
            .network(&e.network)
            .is_some_and(|n| of(n.driver).shares_host())
    })
}

/// Is network `name` (of the model) served by a plugin outside the daemon?
pub fn plugin_served(state: &State, name: &str) -> bool {
    state
        .network(name)
        .is_some_and(|n| of(n.driver).plugin_served())
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
    fn unknown_keys_are_refused_with_the_known_ones() {
        let err = of(Driver::Bridge)
            .validate(&opts(&[("mac_agin", "3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option mac_agin") && err.contains("mac_aging"),
            "{err}"
        );
        assert!(of(Driver::Null).validate(&opts(&[("a", "b")])).is_err());
        assert!(of(Driver::Null).validate(&opts(&[])).is_ok());
        assert!(of(Driver::Remote).addressed() && of(Driver::Remote).plugin_served());
    }

    #[test]
    fn bridge_and_overlay_are_switched_and_only_host_shares_the_host() {
        for d in [Driver::Bridge, Driver::Host, Driver::Null, Driver::Overlay] {
            let switched = matches!(d, Driver::Bridge | Driver::Overlay);
            assert_eq!(of(d).switched(), switched);
            assert_eq!(of(d).shares_host(), d == Driver::Host);
            assert_eq!(of(d).name(), d.name());
            assert_eq!(of(d).check_create().is_ok(), switched);
            assert_eq!(of(d).addressed(), switched);
        }
    }
}
