//! The controller: owns the CNM model and the state file, and carries out API requests.
//!
//! Every request is validated in full before anything changes; system work that fails half way
//! is rolled back, so a failed request leaves the model, the state file and the namespaces as
//! they were.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::etc_files;
use super::ipam::{self, DEFAULT_BRIDGE_SUBNET};
use super::ipam6;
use super::links;
use super::model::{
    BUILTIN, DEFAULT_MTU, Endpoint, Network, Sandbox, State, new_id, validate_name,
};
use super::ports::{self, HostSocket, PublishedPort};
use super::store::Store;
use super::validate::{self, MAX_VNI};
use super::views::{network_view, sandbox_view};
use super::wiring;
use crate::api::server::Handler;
use crate::api::types::{FdbRow, NetworkCreate, Request, SandboxCreate, StatsRow};
use crate::datapath::Datapath;
use crate::datapath::capture::{CaptureSession, CaptureSink};
use crate::datapath::fdb::{DEFAULT_AGING_SECS, PortId};
use crate::datapath::port::NetId;
use crate::drivers::bridge::GATEWAY_PORT;
use crate::drivers::{self, Ctx, Device, DevicePlan, Switch, Unwired};
use crate::error::{Error, Result};
use crate::gateway::Commander;
use crate::gateway::Gateway;
use crate::gateway::policy::NatPolicy;
use crate::gateway::publish::{GatewayCommand, PublishTarget};
use crate::netns::namespace;
use crate::netns::processes;
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use crate::rootless::Mode;
use crate::wire::Ipv4Net;
use crate::wire::Ipv6Net;
use crate::wire::MacAddr;

mod cluster;
mod cni;
mod docker;
mod endpoints;
use endpoints::Wanted;
mod link_changes;
mod names;
mod networks;
mod observe;
mod oper_info;
mod policy_changes;
mod publish;
mod remote;
mod replay;
mod restore;
mod sample;
mod sandboxes;
mod setup;
use setup::SandboxSetup;
mod trace;
mod vm_ports;

pub struct Controller {
    inner: Mutex<Inner>,
    next_capture: AtomicU64,
    /// The Docker plugin servers running, by name (`controller/docker.rs`).
    docker_servers: Mutex<HashMap<String, crate::plugin::docker::Server>>,
    /// The controller's own `Arc`, which plugin servers hold to call back.
    me: std::sync::OnceLock<std::sync::Weak<Controller>>,
}

/// pcap's customary default: whole frames.
const DEFAULT_SNAPLEN: u32 = 262_144;

struct Inner {
    dirs: StateDir,
    /// Root or rootless: how sandboxes are entered by hand.
    mode: Mode,
    /// Sandboxes being removed: their names stay taken until their namespaces are gone.
    removing: HashSet<String>,
    store: Store,
    state: State,
    dp: Arc<Datapath>,
    offload: Offload,
    /// Datapath ids of the bridge networks.
    nets: HashMap<String, NetId>,
    /// Switch ports of endpoints, by (sandbox, interface).
    ports: HashMap<(String, String), PortId>,
    /// The gateway of each bridge network and its switch port.
    gateways: HashMap<String, (PortId, Gateway)>,
    /// Published ports being served, per sandbox: (network, publication id).
    publications: HashMap<String, Vec<(String, u64)>>,
    next_publication: u64,
    nat_policy: NatPolicy,
    /// Where gateways forward names they do not know.
    dns_upstreams: Vec<std::net::SocketAddr>,
    /// VTEPs of overlay networks (the daemon's `--vtep` is their default address).
    overlay: drivers::overlay::Vteps,
    /// Switch ports of joined Docker endpoints, by Docker's EndpointID.
    docker_ports: HashMap<String, PortId>,
    /// A second fd of each joined Docker endpoint's (persistent) TAP, to unpersist it at Leave.
    docker_fds: HashMap<String, std::os::fd::OwnedFd>,
    /// Switch ports of CNI attachments, by (container id, interface).
    cni_ports: HashMap<(String, String), PortId>,
    /// Published ports of Docker endpoints being served: (network, publication id).
    docker_publications: HashMap<String, Vec<(String, u64)>>,
    /// Where `remote:NAME` plugins are looked for: `<state-dir>/plugins`, then Docker's dirs.
    plugin_dirs: Vec<std::path::PathBuf>,
    /// The cluster store (`daemon --store`), once attached.
    cluster: Option<crate::cluster::Cluster>,
    /// Endpoints of other hosts on overlay networks, from the store, by (network, address).
    remote_eps: BTreeMap<(String, IpAddr), crate::cluster::EndpointRecord>,
    /// Addresses this daemon claimed in the store, released when the model no longer has them.
    claimed: std::cell::RefCell<std::collections::BTreeSet<(String, IpAddr)>>,
    /// Addresses being claimed in the store, or claimed for a request not committed yet
    /// (`controller/cluster.rs`): plans see them taken.
    pending_claims: Vec<(String, IpAddr)>,
    /// The addresses the request being committed claimed, by network: its plans take them.
    preclaimed: HashMap<String, IpAddr>,
    /// The IPv6 address claimed with each IPv4 one of `pending_claims` and `claimed` (dual-stack
    /// overlay networks): plans see them taken, and the committed plan takes its own.
    claims6: HashMap<(String, IpAddr), std::net::Ipv6Addr>,
    /// Networks whose plugin is being told of their creation, or whose key is being put in the
    /// cluster store (`controller/remote.rs`): their names, subnets and VNIs are taken, they
    /// are not in the model yet.
    creating_networks: Vec<Network>,
    /// Networks of the cluster store whose VNI a create here held when they came: adopted when
    /// the create is over (it lost the store's transaction, or they are gone).
    deferred_networks: Vec<Network>,
    /// Remote networks whose plugin is being told of their removal: no endpoint may join.
    deleting_networks: HashSet<String>,
    /// Sandboxes being created, and sandboxes being connected to a network (with only the new
    /// endpoint), whose namespaces, TAPs or plugin endpoints are made without the lock: their
    /// names and addresses are taken, their networks in use, no other change to them meanwhile.
    creating_sandboxes: Vec<Sandbox>,
    /// CNI attachments whose TAP is being made: their addresses are taken, their networks in
    /// use, they are not in the model yet.
    creating_cni: Vec<super::model::CniAttachment>,
    /// Docker endpoints whose TAP is being made for a Join: a second Join is refused.
    docker_joining: HashSet<String>,
    /// VMs' ports being served (`tapnet port add`), by name.
    vm_ports: HashMap<String, vm_ports::ServedPort>,
}

fn default_state() -> Result<State> {
    let networks = BUILTIN
        .iter()
        .map(|&(name, driver)| -> Result<Network> {
            let imp = drivers::of(driver);
            let options = BTreeMap::new();
            let addressed = imp.addressed();
            Ok(Network {
                name: name.to_string(),
                id: new_id()?,
                driver,
                subnet: addressed.then_some(DEFAULT_BRIDGE_SUBNET),
                gateway: addressed.then_some(Ipv4Addr::new(172, 17, 0, 1)),
                subnet6: None,
                gateway6: None,
                ip_range: None,
                internal: false,
                mtu: DEFAULT_MTU,
                vni: None,
                mac_aging_s: DEFAULT_AGING_SECS,
                offload: true,
                // No options: nothing to refuse.
                typed: imp.validate(&options).ok(),
                options,
                builtin: true,
                plugin: None,
                policy: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(State {
        version: State::VERSION,
        generation: 0,
        networks,
        sandboxes: Default::default(),
        cni: Vec::new(),
        docker_plugins: Vec::new(),
        committed_requests: Default::default(),
        ula: None,
        vm_ports: Vec::new(),
    })
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| Error::invalid(format!("malformed {what} {s:?}: expected an IPv4 address")))
}

fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net> {
    s.parse()
        .map_err(|e: String| Error::invalid(format!("{what}: {e}")))
}

fn parse_ip6(what: &str, s: &str) -> Result<std::net::Ipv6Addr> {
    s.parse()
        .map_err(|_| Error::invalid(format!("malformed {what} {s:?}: expected an IPv6 address")))
}

fn parse_cidr6(what: &str, s: &str) -> Result<crate::wire::Ipv6Net> {
    s.parse()
        .map_err(|e: String| Error::invalid(format!("{what}: {e}")))
}

/// `eth0`, `eth1`, ...: the lowest index no endpoint of the sandbox uses.
fn next_interface(sb: &Sandbox) -> String {
    let used: HashSet<_> = sb
        .endpoints
        .iter()
        .filter_map(|e| e.interface.clone())
        .collect();
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(n))
        .unwrap_or_default()
}

impl Controller {
    /// Load (or create) the state and bring every network and sandbox back to life.
    pub fn open(
        dirs: StateDir,
        dp: Arc<Datapath>,
        offload: Offload,
        nat_policy: NatPolicy,
        dns_upstreams: Vec<std::net::SocketAddr>,
        mode: Mode,
        vtep: Option<std::net::SocketAddr>,
    ) -> Result<Controller> {
        let mut store = Store::new(dirs.state_file());
        let state = match store.load()? {
            Some(state) => state,
            None => default_state()?,
        };
        let plugin_dirs = std::iter::once(dirs.root().join("plugins"))
            .chain(
                crate::plugin::client::SYSTEM_DIRS
                    .iter()
                    .map(std::path::PathBuf::from),
            )
            .collect();
        let mut inner = Inner {
            dirs,
            mode,
            removing: HashSet::new(),
            store,
            state,
            dp,
            offload,
            nets: HashMap::new(),
            ports: HashMap::new(),
            gateways: HashMap::new(),
            publications: HashMap::new(),
            next_publication: 1,
            nat_policy,
            dns_upstreams,
            overlay: drivers::overlay::Vteps::new(vtep),
            docker_ports: HashMap::new(),
            docker_publications: HashMap::new(),
            cni_ports: HashMap::new(),
            docker_fds: HashMap::new(),
            plugin_dirs,
            cluster: None,
            remote_eps: BTreeMap::new(),
            claimed: Default::default(),
            pending_claims: Vec::new(),
            preclaimed: HashMap::new(),
            claims6: HashMap::new(),
            creating_networks: Vec::new(),
            deferred_networks: Vec::new(),
            deleting_networks: HashSet::new(),
            creating_sandboxes: Vec::new(),
            creating_cni: Vec::new(),
            docker_joining: HashSet::new(),
            vm_ports: HashMap::new(),
        };
        inner.share_subnets_with_nat();
        for dir in inner.dirs.pin_dirs() {
            namespace::ensure_pin_dir(&dir)?;
        }
        inner.reconcile();
        inner.restore();
        inner.sync_names();
        inner.sync_policy(None);
        // Appending goes on where the loaded journal ends (a snapshot first where it cannot).
        inner.store.open(&inner.state)?;
        Ok(Controller {
            inner: Mutex::new(inner),
            next_capture: AtomicU64::new(1),
            docker_servers: Mutex::new(HashMap::new()),
            me: std::sync::OnceLock::new(),
        })
    }
}

/// The networks of `state` that are in `only` (all with `None`).
fn networks_in<'a>(
    state: &'a State,
    only: Option<&'a HashSet<String>>,
) -> impl Iterator<Item = &'a Network> {
    state
        .networks
        .iter()
        .filter(move |n| only.is_none_or(|set| set.contains(&n.name)))
}

/// The controller's state, held for one request.
type Guard<'a> = std::sync::MutexGuard<'a, Inner>;

/// A request handed to a family's function that does not serve it: a bug in `handle`.
fn misrouted(family: &str) -> Error {
    Error::invalid(format!(
        "internal error: request sent to the {family} requests"
    ))
}

impl Handler for Controller {
    /// A replayed answer, or the request's family: each family's function lives in the
    /// `controller/` file of its objects.
    fn handle(&self, request: Request) -> Result<Value> {
        let mut inner = self.lock_for_request()?;
        if crate::control::request_log::already_committed(&inner.state.committed_requests)
            && let Some(answer) = inner.replay(&request)
        {
            return answer;
        }
        match request {
            Request::Ping | Request::Shutdown => daemon_request(request),
            Request::NetworkCreate(_)
            | Request::NetworkList
            | Request::NetworkInspect { .. }
            | Request::NetworkRemove { .. } => self.network_request(inner, request),
            Request::NetworkConnect { .. } | Request::NetworkDisconnect { .. } => {
                self.endpoint_request(inner, request)
            }
            Request::SandboxCreate(_)
            | Request::SandboxList
            | Request::SandboxInspect { .. }
            | Request::SandboxRemove { .. } => self.sandbox_request(inner, request),
            Request::LinkSet(_)
            | Request::LinkShow { .. }
            | Request::LinkReset { .. }
            | Request::LinkBlock { .. } => inner.link_request(request),
            Request::PolicyAdd { .. }
            | Request::PolicyList { .. }
            | Request::PolicyRemove { .. } => inner.policy_request(request),
            Request::Info
            | Request::SystemExport
            | Request::Fdb { .. }
            | Request::Stats { .. }
            | Request::Trace(_) => inner.observe_request(request),
            Request::CniAdd { .. }
            | Request::CniDel { .. }
            | Request::CniCheck { .. }
            | Request::CniGc { .. } => self.cni_request(inner, request),
            Request::PortAdd(_) | Request::PortList { .. } | Request::PortRemove { .. } => {
                self.port_request(inner, request)
            }
            Request::PluginDocker { name, stop } => {
                drop(inner);
                self.plugin_docker(&name, stop)
            }
            Request::Capture { .. } | Request::TraceLive { .. } => Err(Error::invalid(
                "capture streams: it is served by the connection, not as a request",
            )),
        }
    }

    fn port_labels(&self, network: &str) -> Result<HashMap<PortId, String>> {
        let inner = self.lock_for_request()?;
        inner.port_labels(network)
    }

    fn open_capture(
        &self,
        network: &str,
        sandbox: Option<&str>,
        snaplen: Option<u32>,
    ) -> Result<CaptureSession> {
        let inner = self.lock_for_request()?;
        let snaplen = snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if !(14..=DEFAULT_SNAPLEN).contains(&snaplen) {
            return Err(Error::invalid(format!(
                "snaplen {snaplen} is out of range (14-{DEFAULT_SNAPLEN})"
            )));
        }
        let net_id = inner.bridge_net_id(network)?;
        let mtu = inner.network(network)?.mtu as usize;
        let ports = match sandbox {
            None => None,
            // A VM's port (`tapnet port add`) by its name.
            Some(name)
                if inner.state.sandbox(name).is_none()
                    && inner.vm_port_id(network, name).is_some() =>
            {
                inner.vm_port_id(network, name).map(|id| vec![id])
            }
            Some(name) => {
                let sb = inner.sandbox(name)?;
                let ep = sb.endpoint(network).ok_or_else(|| {
                    Error::conflict(format!(
                        "sandbox {name} is not connected to network {network}"
                    ))
                })?;
                let iface = ep.interface.clone().unwrap_or_default();
                let port = inner
                    .ports
                    .get(&(name.to_string(), iface))
                    .copied()
                    .ok_or_else(|| {
                        Error::conflict(format!("sandbox {name} has no port on network {network}"))
                    })?;
                Some(vec![port])
            }
        };
        // Frames leave the switch segmented: none is longer than the MTU plus an Ethernet
        // header and a VLAN tag.
        let record_len = (snaplen as usize).min(mtu + 18);
        let id = self.next_capture.fetch_add(1, Ordering::Relaxed);
        let (sink, records) = CaptureSink::new(id, net_id, ports, record_len);
        Ok(CaptureSession::start(
            inner.dp.clone(),
            sink,
            records,
            snaplen,
        ))
    }
}

/// The daemon's own requests: is it there, and stop.
fn daemon_request(request: Request) -> Result<Value> {
    match request {
        Request::Ping => Ok(json!({"pid": std::process::id()})),
        Request::Shutdown => {
            // Answer first, then stop the way SIGTERM does.
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGTERM,
                );
            });
            Ok(json!({"stopping": std::process::id()}))
        }
        _ => Err(misrouted("daemon")),
    }
}

/// Names of the entries of `dir` (none if it does not exist).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(format!("encode answer: {e}")))
}

/// Slow work that follows a committed change: waiting for gateways to close published
/// sockets, for every datapath worker to drop a port, for a gateway thread to end, and
/// unpinning namespaces. Run without the controller's lock, so that `stats`, `fdb` and every
/// other request go on meanwhile.
#[must_use]
struct Teardown {
    dp: Arc<Datapath>,
    unpublish: Vec<(Commander, u64)>,
    /// Persistent TAPs to make transient (a Docker endpoint's at Leave): a second fd of each,
    /// with its name. Done before their ports go, so the TAPs go with them.
    taps: Vec<(std::os::fd::OwnedFd, String)>,
    /// Endpoints' switch ports, and plugins to tell (Leave, DeleteEndpoint), by their drivers.
    endpoints: Vec<Unwired>,
    switches: Vec<Switch>,
    pins: Vec<std::path::PathBuf>,
    /// Sandboxes whose /etc files go, with their state dir.
    etc: Vec<(StateDir, String)>,
}

impl Teardown {
    fn new(dp: Arc<Datapath>) -> Self {
        Teardown {
            dp,
            unpublish: Vec::new(),
            taps: Vec::new(),
            endpoints: Vec::new(),
            switches: Vec::new(),
            pins: Vec::new(),
            etc: Vec::new(),
        }
    }

    /// Add `other`'s work to this teardown's.
    fn absorb(&mut self, other: Teardown) {
        self.unpublish.extend(other.unpublish);
        self.taps.extend(other.taps);
        self.endpoints.extend(other.endpoints);
        self.switches.extend(other.switches);
        self.pins.extend(other.pins);
        self.etc.extend(other.etc);
    }

    fn run(self) {
        for (gateway, id) in self.unpublish {
            let (done, wait) = crossbeam_channel::bounded(1);
            gateway.send(GatewayCommand::Unpublish(id, done));
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
        for (fd, name) in &self.taps {
            if let Err(e) = crate::netns::tap::set_persist(fd, name, false) {
                eprintln!("tapnet: {e}");
            }
        }
        drop(self.taps);
        for ep in self.endpoints {
            ep.run(&self.dp);
        }
        for switch in self.switches {
            if let Some((port, gateway)) = switch.gateway {
                drop(gateway);
                self.dp.remove_port(port);
            }
            for port in switch.ports {
                self.dp.remove_port(port);
            }
            if let Some(id) = switch.net {
                self.dp.remove_network(id);
            }
        }
        for pin in &self.pins {
            namespace::remove(pin);
        }
        for (dirs, sandbox) in &self.etc {
            etc_files::remove(dirs, sandbox);
        }
    }
}

impl Controller {
    /// At a clean stop: fold the journal into a new snapshot, so that state.json alone holds
    /// the state. What is written is what was committed, whatever a request was doing.
    pub fn checkpoint(&self) {
        let Ok(mut inner) = self.lock_for_request() else {
            return;
        };
        if let Err(e) = inner.store.checkpoint() {
            eprintln!("tapnet: {e}");
        }
    }

    /// The controller's state, for a step of a request already under way (see
    /// `guard::lock_or_stop`).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::guard::lock_or_stop(&self.inner, "the controller's state")
    }

    /// The controller's state for a new request: refused when a panic left it half-changed,
    /// so that no request runs on it; the daemon is stopping then, and a client's retry
    /// starts a new one from the saved state.
    fn lock_for_request(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        if self.inner.is_poisoned() {
            drop(self.lock());
            return Err(Error::Remote(
                "the daemon stops after an internal error (a bug, logged in its daemon.log); \
                 retry, and a new daemon starts from the saved state"
                    .into(),
            ));
        }
        Ok(self.lock())
    }

    /// A change made under the lock that leaves slow work behind (ports to remove, published
    /// ports to close, plugins to tell): `change` plans and commits it and puts that work in
    /// the teardown, which runs after the lock is released, whether the change worked or not
    /// (what it took out of the maps goes either way).
    fn with_teardown<T>(
        &self,
        change: impl FnOnce(&mut Inner, &mut Teardown) -> Result<T>,
    ) -> Result<T> {
        let (result, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            (change(&mut inner, &mut teardown), teardown)
        };
        teardown.run();
        result
    }

    /// `sandbox rm`: checked and reserved under the lock; processes killed without it (up to
    /// 5 s); the model changed and saved under it; ports, publications and namespaces released
    /// without it. The name stays taken until the namespaces are gone.
    fn sandbox_remove(&self, name: &str, force: bool) -> Result<()> {
        let (netns, own_namespaces) = {
            let mut inner = self.lock();
            inner.refuse_connecting(name)?;
            let sb = inner.sandbox(name)?;
            let own = !drivers::shares_host(&inner.state, sb);
            if !inner.removing.insert(name.to_string()) {
                return Err(Error::conflict(format!(
                    "sandbox {name} is being removed already"
                )));
            }
            (inner.dirs.netns_path(name), own)
        };
        let release = |this: &Self| {
            this.lock().removing.remove(name);
        };
        if own_namespaces {
            let running = processes::in_netns(&netns);
            if !running.is_empty() {
                if !force {
                    release(self);
                    let list: Vec<String> = running
                        .iter()
                        .map(|p| format!("{} ({})", p.pid, p.name))
                        .collect();
                    return Err(Error::conflict(format!(
                        "sandbox {name} has running processes: {}; stop them or use --force",
                        list.join(", ")
                    )));
                }
                let left = processes::kill_all(&netns);
                if !left.is_empty() {
                    release(self);
                    return Err(Error::conflict(format!(
                        "sandbox {name}: {} processes survived SIGKILL",
                        left.len()
                    )));
                }
            }
        }
        let teardown = {
            let mut inner = self.lock();
            match inner.commit_sandbox_removal(name) {
                Ok(t) => t,
                Err(e) => {
                    inner.removing.remove(name);
                    return Err(e);
                }
            }
        };
        teardown.run();
        release(self);
        Ok(())
    }
}

impl Inner {
    fn save(&mut self) -> Result<()> {
        crate::control::request_log::record(&mut self.state.committed_requests);
        self.share_subnets_with_nat();
        self.release_stale_claims();
        // The tables of the networks the commit concerns, once it is written: a failed commit
        // (rolled back by the caller) leaves them as they were.
        let touched = self.store.save(&self.state)?;
        let only = touched.as_ref().map(|t| &t.networks);
        match touched.as_ref().and_then(|t| t.sandboxes.as_deref()) {
            Some(sandboxes) => self.edit_names(sandboxes),
            None => self.sync_names_on(only),
        }
        self.sync_policy_on(None, only);
        Ok(())
    }

    /// Tell the gateways' NAT which prefixes are tapnet's own networks (never reached through
    /// host sockets), in both families.
    fn share_subnets_with_nat(&self) {
        let networks = &self.state.networks;
        self.nat_policy
            .set_tapnet_subnets(networks.iter().filter_map(|n| n.subnet).collect());
        self.nat_policy
            .set_tapnet_subnets_v6(networks.iter().filter_map(|n| n.subnet6).collect());
    }

    fn network(&self, name: &str) -> Result<&Network> {
        self.state
            .network(name)
            .ok_or_else(|| Error::not_found("network", name))
    }

    fn sandbox(&self, name: &str) -> Result<&Sandbox> {
        self.state
            .sandbox(name)
            .ok_or_else(|| Error::not_found("sandbox", name))
    }

    /// The driver seam's view of the controller's datapath maps.
    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            dp: &self.dp,
            offload: self.offload,
            nets: &mut self.nets,
            ports: &mut self.ports,
            gateways: &mut self.gateways,
            nat_policy: &self.nat_policy,
            dns_upstreams: &self.dns_upstreams,
            overlay: &mut self.overlay,
            plugin_dirs: &self.plugin_dirs,
        }
    }
}
