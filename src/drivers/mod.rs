//! The driver seam, as netavark's `NetworkDriver`: each driver checks its own `--opt` keys and
//! sets up and tears down the datapath side of its networks and endpoints. The controller keeps
//! the model, IPAM, persistence and the order of steps, and asks the driver for the rest.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::control::model::{Driver, Endpoint, Network};
use crate::datapath::Datapath;
use crate::datapath::fdb::PortId;
use crate::datapath::frame::MacAddr;
use crate::datapath::port::NetId;
use crate::error::{Error, Result};
use crate::gateway::Gateway;
use crate::gateway::policy::NatPolicy;
use crate::netns::tap::Offload;

pub mod bridge;
pub mod host;
pub mod null;
pub mod overlay;
pub mod remote;

/// `--opt KEY=VALUE` pairs as stored on a network.
pub type Options = BTreeMap<String, String>;

/// A network's datapath side as it leaves the controller's maps: its gateway (with the
/// gateway's switch port), other ports the driver made (a VTEP's), and its datapath id. A
/// teardown stops them.
#[derive(Default)]
pub struct Switch {
    pub gateway: Option<(PortId, Gateway)>,
    pub ports: Vec<PortId>,
    pub net: Option<NetId>,
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
    pub plugin_dirs: &'a [std::path::PathBuf],
}

pub trait NetworkDriver: Sync {
    fn name(&self) -> &'static str;

    /// May a user create a network of this driver? Host and null exist once, built in.
    fn check_create(&self) -> Result<()>;

    /// Check `--opt` keys and values; an unknown key is an error.
    fn check_options(&self, options: &Options) -> Result<()>;

    /// Do endpoints get an interface, a MAC, an address and a switch port?
    fn switched(&self) -> bool {
        false
    }

    /// Does a sandbox on this network share the daemon's network namespace?
    fn shares_host(&self) -> bool {
        false
    }

    /// Tell whoever serves the network that it is being created (on create only, before
    /// `setup_network`); an error fails the create.
    fn create_network(&self, _ctx: &Ctx<'_>, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Tell whoever serves the network that it is being removed; an error keeps it.
    fn delete_network(&self, _ctx: &Ctx<'_>, _net: &Network) -> Result<()> {
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

    /// Create the endpoint's device in the sandbox's namespace at `netns` and attach it.
    /// Returns the MAC the device got when it is not the planned one (a remote plugin's).
    fn setup_endpoint(
        &self,
        _ctx: &mut Ctx<'_>,
        _netns: &Path,
        _sandbox: &str,
        _ep: &Endpoint,
        _net: &Network,
    ) -> Result<Option<MacAddr>> {
        Ok(None)
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
            .check_options(&opts(&[("mac_agin", "3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option mac_agin") && err.contains("mac_aging"),
            "{err}"
        );
        assert!(
            of(Driver::Null)
                .check_options(&opts(&[("a", "b")]))
                .is_err()
        );
        assert!(of(Driver::Null).check_options(&opts(&[])).is_ok());
    }

    #[test]
    fn bridge_and_overlay_are_switched_and_only_host_shares_the_host() {
        for d in [Driver::Bridge, Driver::Host, Driver::Null, Driver::Overlay] {
            let switched = matches!(d, Driver::Bridge | Driver::Overlay);
            assert_eq!(of(d).switched(), switched);
            assert_eq!(of(d).shares_host(), d == Driver::Host);
            assert_eq!(of(d).name(), d.name());
            assert_eq!(of(d).check_create().is_ok(), switched);
        }
    }
}
