//! The controller: owns the CNM model and the state file, and carries out API requests.
//!
//! Every request is validated in full before anything changes; system work that fails half way
//! is rolled back, so a failed request leaves the model, the state file and the namespaces as
//! they were.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::etc_files;
use super::ipam::{self, DEFAULT_BRIDGE_SUBNET};
use super::ipv4net::Ipv4Net;
use super::links;
use super::model::{
    DEFAULT_MTU, Driver, Endpoint, MAX_MTU, MIN_MTU, Network, Sandbox, State, new_id, validate_name,
};
use super::ports::{self, HostSocket, PublishedPort};
use super::store::Store;
use super::views::{network_view, sandbox_view};
use super::wiring::{self, TapSpec};
use crate::api::server::Handler;
use crate::api::types::{FdbRow, NetworkCreate, Request, SandboxCreate, StatsRow};
use crate::datapath::Datapath;
use crate::datapath::capture::{CaptureSession, CaptureSink};
use crate::datapath::fdb::{DEFAULT_AGING_SECS, DEFAULT_PORT_LIMIT, PortId};
use crate::datapath::frame::MacAddr;
use crate::datapath::port::NetId;
use crate::datapath::security::PortPolicy;
use crate::error::{Context, Error, Result};
use crate::gateway::Commander;
use crate::gateway::dns_server::{DnsServer, NameTable};
use crate::gateway::policy::NatPolicy;
use crate::gateway::publish::{GatewayCommand, PublishTarget};
use crate::gateway::{Gateway, GatewayConfig, NatLimits};
use crate::netns::namespace;
use crate::netns::processes;
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use crate::rootless::Mode;

mod docker;
mod sample;
mod trace;

const MAX_VNI: u32 = (1 << 24) - 1;
/// How long an idle UDP NAT flow lives unless `--opt nat_udp_timeout=SECONDS` says otherwise.
const DEFAULT_UDP_IDLE_SECS: u32 = 30;

/// A `--opt KEY=SECONDS` value: `None` when absent, an error unless a number > 0.
fn option_secs(options: &BTreeMap<String, String>, key: &str) -> Result<Option<u32>> {
    options
        .get(key)
        .map(|v| {
            v.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                Error::invalid(format!(
                    "option {key}={v}: expected a number of seconds > 0"
                ))
            })
        })
        .transpose()
}

/// `--opt port_security=on|off`: may a sandbox's port send only as its endpoint (default on)?
fn port_security(options: &BTreeMap<String, String>) -> Result<bool> {
    match options.get("port_security").map(String::as_str) {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(v) => Err(Error::invalid(format!(
            "option port_security={v}: expected on or off"
        ))),
    }
}

/// A `--opt KEY=N` count: `None` when absent, an error unless a number > 0.
fn option_count(options: &BTreeMap<String, String>, key: &str) -> Result<Option<u32>> {
    options
        .get(key)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::invalid(format!("option {key}={v}: expected a number > 0")))
        })
        .transpose()
}

/// `--opt max_macs_per_port=N`: stations one port may own in the MAC table (default 64).
fn max_macs_per_port(options: &BTreeMap<String, String>) -> Result<u32> {
    Ok(option_count(options, "max_macs_per_port")?.unwrap_or(DEFAULT_PORT_LIMIT))
}

/// The gateway's NAT caps, from `--opt nat_{udp,tcp}_flows_per_{sandbox,gateway}=N` and
/// `--opt nat_udp_peers=N` over the defaults.
fn nat_limits(options: &BTreeMap<String, String>) -> Result<NatLimits> {
    let mut limits = NatLimits::default();
    let set = |key: &str, field: &mut usize| -> Result<()> {
        if let Some(n) = option_count(options, key)? {
            *field = n as usize;
        }
        Ok(())
    };
    set("nat_udp_flows_per_sandbox", &mut limits.udp.per_sandbox)?;
    set("nat_udp_flows_per_gateway", &mut limits.udp.per_gateway)?;
    set("nat_tcp_flows_per_sandbox", &mut limits.tcp.per_sandbox)?;
    set("nat_tcp_flows_per_gateway", &mut limits.tcp.per_gateway)?;
    set("nat_udp_peers", &mut limits.published_udp_peers)?;
    Ok(limits)
}

/// Label of a network's gateway port in `stats` and `fdb`.
const GATEWAY_PORT: &str = "gateway";

/// The two ends of a gateway's switch port: a socketpair that keeps frame boundaries.
fn gateway_port() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
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
    /// Switch ports of joined Docker endpoints, by Docker's EndpointID.
    docker_ports: HashMap<String, PortId>,
}

fn default_state() -> State {
    let builtin = |name: &str, driver: Driver| Network {
        name: name.to_string(),
        id: new_id(),
        driver,
        subnet: None,
        gateway: None,
        ip_range: None,
        internal: false,
        mtu: DEFAULT_MTU,
        vni: None,
        mac_aging_s: DEFAULT_AGING_SECS,
        offload: true,
        options: BTreeMap::new(),
        builtin: true,
    };
    let mut bridge = builtin("bridge", Driver::Bridge);
    bridge.subnet = Some(DEFAULT_BRIDGE_SUBNET);
    bridge.gateway = Some(Ipv4Addr::new(172, 17, 0, 1));
    State {
        version: State::VERSION,
        networks: vec![
            bridge,
            builtin("host", Driver::Host),
            builtin("none", Driver::Null),
        ],
        sandboxes: Vec::new(),
        docker_plugins: Vec::new(),
    }
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| Error::invalid(format!("malformed {what} {s:?}: expected an IPv4 address")))
}

fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net> {
    s.parse()
        .map_err(|e: String| Error::invalid(format!("{what}: {e}")))
}

fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid hostname {h:?}")))
    }
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
    ) -> Result<Controller> {
        let store = Store::new(dirs.state_file());
        let state = match store.load()? {
            Some(state) => state,
            None => {
                let state = default_state();
                store.save(&state)?;
                state
            }
        };
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
            docker_ports: HashMap::new(),
        };
        inner.nat_policy.set_tapnet_subnets(
            inner
                .state
                .networks
                .iter()
                .filter_map(|n| n.subnet)
                .collect(),
        );
        for dir in inner.dirs.pin_dirs() {
            namespace::ensure_pin_dir(&dir)?;
        }
        inner.reconcile();
        inner.restore();
        inner.sync_names();
        Ok(Controller {
            inner: Mutex::new(inner),
            next_capture: AtomicU64::new(1),
            docker_servers: Mutex::new(HashMap::new()),
            me: std::sync::OnceLock::new(),
        })
    }
}

impl Handler for Controller {
    fn handle(&self, request: Request) -> Result<Value> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match request {
            Request::Ping => Ok(json!({"pid": std::process::id()})),
            Request::NetworkCreate(req) => {
                let name = inner.network_create(req)?;
                value(&inner.network_view(&name)?)
            }
            Request::NetworkList => {
                let views: Vec<_> = inner
                    .state
                    .networks
                    .iter()
                    .map(|n| network_view(&inner.state, n))
                    .collect();
                value(&views)
            }
            Request::NetworkInspect { name } => value(&inner.network_view(&name)?),
            Request::NetworkRemove { name } => {
                inner.refuse_docker_owned(&name)?;
                let teardown = inner.network_remove(&name)?;
                drop(inner);
                teardown.run();
                Ok(json!({"removed": name}))
            }
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
            } => {
                inner.network_connect(&network, &sandbox, ip.as_deref(), aliases)?;
                value(&inner.sandbox_view(&sandbox)?)
            }
            Request::NetworkDisconnect { network, sandbox } => {
                let teardown = inner.network_disconnect(&network, &sandbox)?;
                drop(inner);
                teardown.run();
                let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let result = inner.sync_default_route_of(&sandbox);
                let view = inner.sandbox_view(&sandbox);
                result?;
                value(&view?)
            }
            Request::SandboxCreate(req) => {
                let name = inner.sandbox_create(req)?;
                value(&inner.sandbox_view(&name)?)
            }
            Request::SandboxList => {
                let views: Vec<_> = inner
                    .state
                    .sandboxes
                    .iter()
                    .map(|s| inner.view_of(s))
                    .collect();
                value(&views)
            }
            Request::SandboxInspect { name } => value(&inner.sandbox_view(&name)?),
            Request::SandboxRemove { name, force } => {
                drop(inner);
                self.sandbox_remove(&name, force)?;
                Ok(json!({"removed": name}))
            }
            Request::Info => value(&inner.info()),
            Request::Fdb { network } => value(&inner.fdb(&network)?),
            Request::Stats { network } => value(&inner.stats(network.as_deref())?),
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
            Request::LinkSet(change) => {
                let restart = change.sandbox.clone();
                inner.link_update(Some(&restart), |st| {
                    links::apply_change(st, &change).map(|n| vec![n])
                })
            }
            Request::LinkShow { network } => value(&links::rows(
                &inner.state,
                &inner.ports,
                &inner.dp,
                network.as_deref(),
            )?),
            Request::LinkReset { network, sandbox } => inner.link_update(None, |st| {
                links::reset(st, network.as_deref(), sandbox.as_deref())
            }),
            Request::LinkBlock {
                a,
                b,
                network,
                block,
            } => inner.link_update(None, |st| {
                links::set_block(st, &a, &b, network.as_deref(), block)
            }),
            Request::Trace(req) => value(&inner.trace(&req)?),
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
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.port_labels(network)
    }

    fn open_capture(
        &self,
        network: &str,
        sandbox: Option<&str>,
        snaplen: Option<u32>,
    ) -> Result<CaptureSession> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
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
/// A network's datapath side as it leaves the controller's maps: its gateway (with the
/// gateway's switch port) and its datapath id.
type Switch = (Option<(PortId, Gateway)>, Option<NetId>);

#[must_use]
struct Teardown {
    dp: Arc<Datapath>,
    unpublish: Vec<(Commander, u64)>,
    ports: Vec<PortId>,
    switches: Vec<Switch>,
    pins: Vec<std::path::PathBuf>,
    dirs: Vec<std::path::PathBuf>,
}

impl Teardown {
    fn new(dp: Arc<Datapath>) -> Self {
        Teardown {
            dp,
            unpublish: Vec::new(),
            ports: Vec::new(),
            switches: Vec::new(),
            pins: Vec::new(),
            dirs: Vec::new(),
        }
    }

    fn run(self) {
        for (gateway, id) in self.unpublish {
            let (done, wait) = crossbeam_channel::bounded(1);
            gateway.send(GatewayCommand::Unpublish(id, done));
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
        for port in self.ports {
            self.dp.remove_port(port);
        }
        for (gateway, net) in self.switches {
            if let Some((port, gateway)) = gateway {
                drop(gateway);
                self.dp.remove_port(port);
            }
            if let Some(id) = net {
                self.dp.remove_network(id);
            }
        }
        for pin in &self.pins {
            namespace::remove(pin);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Controller {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `sandbox rm`: checked and reserved under the lock; processes killed without it (up to
    /// 5 s); the model changed and saved under it; ports, publications and namespaces released
    /// without it. The name stays taken until the namespaces are gone.
    fn sandbox_remove(&self, name: &str, force: bool) -> Result<()> {
        let (netns, own_namespaces) = {
            let mut inner = self.lock();
            let sb = inner.sandbox(name)?;
            let own = !inner.state.shares_host(sb);
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
    /// A `tapnet link` change: edit the model, save it, then push it onto the ports. A failed
    /// edit or save leaves the model as it was.
    fn link_update(
        &mut self,
        restart: Option<&str>,
        edit: impl FnOnce(&mut State) -> Result<Vec<String>>,
    ) -> Result<Value> {
        let before = self.state.clone();
        let networks = match edit(&mut self.state).and_then(|n| self.save().map(|_| n)) {
            Ok(n) => n,
            Err(e) => {
                self.state = before;
                return Err(e);
            }
        };
        for net in &networks {
            links::sync(&self.state, &self.ports, &self.dp, net, restart);
        }
        value(&links::rows(&self.state, &self.ports, &self.dp, None)?)
    }

    fn save(&self) -> Result<()> {
        self.nat_policy.set_tapnet_subnets(
            self.state
                .networks
                .iter()
                .filter_map(|n| n.subnet)
                .collect(),
        );
        self.sync_names();
        self.store.save(&self.state)
    }

    /// Give every user-defined network's DNS the names and aliases of its sandboxes, each also
    /// as NAME.NETWORK, and the reverse (PTR) names of their addresses. The default `bridge`
    /// network resolves no sandbox names, as in Docker.
    fn sync_names(&self) {
        for net in &self.state.networks {
            let Some((_, gateway)) = self.gateways.get(&net.name) else {
                continue;
            };
            let mut table = NameTable::new();
            let network = net.name.to_lowercase();
            if !net.builtin {
                for (sb, ep) in self.state.endpoints_on(&net.name) {
                    let Some(ip) = ep.ipv4 else { continue };
                    for name in std::iter::once(&sb.name).chain(&ep.aliases) {
                        let name = name.to_lowercase();
                        // NAME.NETWORK too, as Docker's embedded DNS resolves it.
                        table.add(format!("{name}.{network}"), ip);
                        table.add(name, ip);
                    }
                    // PTR answers name the sandbox as Docker does: NAME.NETWORK.
                    table.add_reverse(ip, format!("{}.{network}", sb.name.to_lowercase()));
                }
            }
            gateway.set_names(table);
        }
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

    fn network_view(&self, name: &str) -> Result<crate::api::types::NetworkView> {
        let mut view = network_view(&self.state, self.network(name)?);
        if let Some((_, gw)) = self.gateways.get(name) {
            view.nat = Some(crate::api::types::NatView {
                tcp_flows: gw.stats.tcp_flows.load(Ordering::Relaxed),
                udp_flows: gw.stats.udp_flows.load(Ordering::Relaxed),
                tcp_refused: gw.stats.tcp_refused.load(Ordering::Relaxed),
                udp_evicted: gw.stats.udp_evicted.load(Ordering::Relaxed),
                dns_shed: gw.dns_shed(),
                published_udp_peers: gw.stats.published_udp_peers.load(Ordering::Relaxed),
            });
        }
        Ok(view)
    }

    fn sandbox_view(&self, name: &str) -> Result<crate::api::types::SandboxView> {
        Ok(self.view_of(self.sandbox(name)?))
    }

    fn view_of(&self, sb: &Sandbox) -> crate::api::types::SandboxView {
        let netns = self.dirs.netns_path(&sb.name).display().to_string();
        let utsns = (!self.state.shares_host(sb))
            .then(|| self.dirs.utsns_path(&sb.name).display().to_string());
        let enter = self.mode.enter_hint(&netns, utsns.as_deref());
        sandbox_view(&self.state, sb, &self.dirs, enter)
    }

    fn info(&self) -> crate::api::types::InfoView {
        crate::api::types::InfoView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id() as i32,
            mode: self.mode.name().to_string(),
            holder_pid: self.mode.holder(),
            state_dir: self.dirs.root().display().to_string(),
            uid_map: std::fs::read_to_string("/proc/self/uid_map")
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            datapath_threads: self.dp.threads(),
            networks: self.state.networks.len(),
            sandboxes: self.state.sandboxes.len(),
            features: crate::rootless::checks::features(),
        }
    }

    /// Make the state dir agree with the model after a crash: namespace pins and /etc dirs of
    /// sandboxes the model does not know (a create that was killed half way) are removed, and
    /// so are the mount-namespace pins of releases before 0.2. Sandboxes the model knows but
    /// whose namespaces are gone are made again by `restore`.
    fn reconcile(&mut self) {
        let known: HashSet<String> = self
            .state
            .sandboxes
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for dir in self.dirs.pin_dirs() {
            for name in names_in(&dir) {
                if !known.contains(&name) {
                    eprintln!(
                        "tapnet: removing leftover namespace {}",
                        dir.join(&name).display()
                    );
                    namespace::remove(&dir.join(&name));
                }
            }
        }
        for name in names_in(&self.dirs.etc_root()) {
            if !known.contains(&name) {
                let _ = std::fs::remove_dir_all(self.dirs.etc_dir(&name));
            }
        }
        let legacy = self.dirs.legacy_mntns_dir();
        if legacy.exists() {
            for name in names_in(&legacy) {
                namespace::remove(&legacy.join(name));
            }
            let _ = std::fs::remove_dir(&legacy);
        }
    }

    // ---- restore after a (re)start ------------------------------------------------------

    fn restore(&mut self) {
        let networks: Vec<Network> = self.state.networks.clone();
        for net in networks.iter().filter(|n| n.driver == Driver::Bridge) {
            if let Err(e) = self.add_switch(net) {
                eprintln!("tapnet: cannot restore network {}: {e}", net.name);
            }
        }
        let sandboxes = self.state.sandboxes.clone();
        for sb in &sandboxes {
            if let Err(e) = self.restore_sandbox(sb) {
                eprintln!("tapnet: cannot restore sandbox {}: {e}", sb.name);
            }
        }
    }

    fn restore_sandbox(&mut self, sb: &Sandbox) -> Result<()> {
        let host_mode = self.state.shares_host(sb);
        let netns = self.dirs.netns_path(&sb.name);
        if !namespace::is_mounted_ns(&netns) {
            // The namespaces are gone (a reboot, or someone unmounted them): make them anew.
            if host_mode {
                namespace::pin_current_netns(&netns)?;
            } else {
                namespace::remove(&netns);
                namespace::remove(&self.dirs.utsns_path(&sb.name));
                self.create_namespaces(sb)?;
            }
        } else if !host_mode {
            self.refresh_etc(sb);
        }
        for ep in &sb.endpoints {
            if let Some(net) = self.state.network(&ep.network).cloned()
                && net.driver == Driver::Bridge
            {
                self.wire(sb, ep, &net)?;
            }
        }
        self.sync_default_route(sb)?;
        let sockets = sb
            .ports
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        self.publish(sb, sockets);
        Ok(())
    }

    fn driver_of(&self, network: &str) -> Option<Driver> {
        self.state.network(network).map(|n| n.driver)
    }

    // ---- networks -----------------------------------------------------------------------

    fn network_create(&mut self, req: NetworkCreate) -> Result<String> {
        validate_name("network", &req.name).map_err(Error::Invalid)?;
        if self.state.network(&req.name).is_some() {
            return Err(Error::exists("network", &req.name));
        }
        let driver =
            Driver::parse(req.driver.as_deref().unwrap_or("bridge")).map_err(Error::Invalid)?;
        if driver != Driver::Bridge {
            return Err(Error::invalid(format!(
                "only one network of driver {} may exist (it is {})",
                driver.name(),
                if driver == Driver::Host {
                    "host"
                } else {
                    "none"
                }
            )));
        }
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(Error::invalid(format!(
                "MTU {mtu} is out of range ({MIN_MTU}-{MAX_MTU})"
            )));
        }
        if let Some(vni) = req.vni {
            if vni == 0 || vni > MAX_VNI {
                return Err(Error::invalid(format!(
                    "VNI {vni} is out of range (1-{MAX_VNI})"
                )));
            }
            return Err(Error::invalid("--vni applies to overlay networks only"));
        }
        let mut options = BTreeMap::new();
        for opt in &req.options {
            let (k, v) = opt.split_once('=').ok_or_else(|| {
                Error::invalid(format!("malformed option {opt:?}: expected KEY=VALUE"))
            })?;
            if k.is_empty() {
                return Err(Error::invalid(format!(
                    "malformed option {opt:?}: empty key"
                )));
            }
            options.insert(k.to_string(), v.to_string());
        }
        let mac_aging_s = option_secs(&options, "mac_aging")?.unwrap_or(DEFAULT_AGING_SECS);
        option_secs(&options, "nat_udp_timeout")?;
        port_security(&options)?;
        max_macs_per_port(&options)?;
        nat_limits(&options)?;
        let taken: Vec<(String, Ipv4Net)> = self
            .state
            .networks
            .iter()
            .filter_map(|n| n.subnet.map(|s| (n.name.clone(), s)))
            .collect();
        let gateway = req
            .gateway
            .as_deref()
            .map(|g| parse_ip("gateway", g))
            .transpose()?;
        let ip_range = req
            .ip_range
            .as_deref()
            .map(|r| parse_cidr("ip range", r))
            .transpose()?;
        let subnet = match req.subnet.as_deref() {
            Some(s) => parse_cidr("subnet", s)?,
            None => {
                if gateway.is_some() || ip_range.is_some() {
                    return Err(Error::invalid("--gateway and --ip-range need --subnet"));
                }
                let only: Vec<Ipv4Net> = taken.iter().map(|(_, s)| *s).collect();
                ipam::next_free_subnet(&only)?
            }
        };
        let gateway = ipam::plan_network(subnet, gateway, ip_range, &taken)?;
        let net = Network {
            name: req.name.clone(),
            id: new_id(),
            driver,
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range,
            internal: req.internal,
            mtu,
            vni: None,
            mac_aging_s,
            offload: req.offload.unwrap_or(true),
            options,
            builtin: false,
        };
        self.add_switch(&net)?;
        self.state.networks.push(net.clone());
        if let Err(e) = self.save() {
            self.state.networks.pop();
            self.remove_switch(&net.name);
            return Err(e);
        }
        Ok(net.name)
    }

    /// The datapath side of a bridge network: its switch, and its gateway on an internal port.
    fn add_switch(&mut self, net: &Network) -> Result<()> {
        let id = self.dp.add_network(&net.name, net.mtu, net.mac_aging_s);
        self.nets.insert(net.name.clone(), id);
        if let Some(dp_net) = self.dp.network(id) {
            dp_net
                .fdb
                .set_port_limit(max_macs_per_port(&net.options).unwrap_or(DEFAULT_PORT_LIMIT));
        }
        if let (Some(subnet), Some(ip)) = (net.subnet, net.gateway) {
            let config = GatewayConfig {
                network: net.name.clone(),
                subnet,
                ip,
                mac: MacAddr::from_ipv4(ip),
                mtu: net.mtu,
                nat: !net.internal,
                policy: self.nat_policy.clone(),
                udp_idle: std::time::Duration::from_secs(u64::from(
                    option_secs(&net.options, "nat_udp_timeout")?.unwrap_or(DEFAULT_UDP_IDLE_SECS),
                )),
                limits: nat_limits(&net.options)?,
                dns: None,
            };
            // Internal networks resolve their own names only; others forward, but only to
            // upstreams the NAT policy admits.
            let upstreams = if net.internal {
                Vec::new()
            } else {
                self.dns_upstreams
                    .iter()
                    .filter(|a| match a.ip() {
                        std::net::IpAddr::V4(ip) => self.nat_policy.allows(ip),
                        std::net::IpAddr::V6(_) => false,
                    })
                    .copied()
                    .collect()
            };
            let started = gateway_port().and_then(|(switch_end, gateway_end)| {
                let dns = DnsServer::start(&net.name, upstreams)?;
                // The gateway speaks for many addresses (NAT replies): no port security.
                let port = self
                    .dp
                    .add_port(id, GATEWAY_PORT.to_string(), switch_end, None)?;
                match Gateway::start(config, gateway_end, dns) {
                    Ok(gw) => Ok((port, gw)),
                    Err(e) => {
                        self.dp.remove_port(port);
                        Err(e)
                    }
                }
            });
            match started {
                Ok(gw) => {
                    self.gateways.insert(net.name.clone(), gw);
                }
                Err(e) => {
                    self.remove_switch(&net.name);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn remove_switch(&mut self, name: &str) {
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.switches.push(self.take_switch(name));
        teardown.run();
    }

    /// A network's gateway and datapath id, forgotten here; the teardown stops them.
    fn take_switch(&mut self, name: &str) -> Switch {
        (self.gateways.remove(name), self.nets.remove(name))
    }

    fn network_remove(&mut self, name: &str) -> Result<Teardown> {
        let net = self.network(name)?;
        if net.builtin {
            return Err(Error::conflict(format!(
                "network {name} is a default network and cannot be removed"
            )));
        }
        let users: Vec<String> = self
            .state
            .endpoints_on(name)
            .map(|(sb, ep)| match &ep.interface {
                Some(i) => format!("{} ({i})", sb.name),
                None => sb.name.clone(),
            })
            .collect();
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "network {name} has active endpoints: {}",
                users.join(", ")
            )));
        }
        let index = self
            .state
            .networks
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::not_found("network", name))?;
        let removed = self.state.networks.remove(index);
        if let Err(e) = self.save() {
            self.state.networks.insert(index, removed);
            return Err(e);
        }
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.switches.push(self.take_switch(name));
        Ok(teardown)
    }

    /// A new endpoint of `sb` on `net`: address checked and chosen, nothing created yet.
    fn plan_endpoint(
        &self,
        sb: &Sandbox,
        net: &Network,
        ip: Option<&str>,
        aliases: Vec<String>,
    ) -> Result<Endpoint> {
        for alias in &aliases {
            validate_name("alias", alias).map_err(Error::Invalid)?;
        }
        self.refuse_docker_owned(&net.name)?;
        if net.driver != Driver::Bridge {
            if ip.is_some() {
                return Err(Error::invalid(format!(
                    "--ip does not apply to network {} (driver {})",
                    net.name,
                    net.driver.name()
                )));
            }
            return Ok(Endpoint {
                id: new_id(),
                network: net.name.clone(),
                interface: None,
                mac: None,
                ipv4: None,
                aliases,
                impairment: None,
                blocked: Vec::new(),
            });
        }
        let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
            return Err(Error::invalid(format!(
                "network {} has no subnet",
                net.name
            )));
        };
        let wanted = ip.map(|s| parse_ip("address", s)).transpose()?;
        let used: HashSet<Ipv4Addr> = self
            .state
            .endpoints_on(&net.name)
            .filter_map(|(_, e)| e.ipv4)
            .collect();
        let ipv4 = ipam::allocate(subnet, gateway, net.ip_range, &used, wanted)?;
        Ok(Endpoint {
            id: new_id(),
            network: net.name.clone(),
            interface: Some(next_interface(sb)),
            mac: Some(MacAddr::from_ipv4(ipv4)),
            ipv4: Some(ipv4),
            aliases,
            impairment: None,
            blocked: Vec::new(),
        })
    }

    /// Create the endpoint's TAP in the sandbox and wire it to the switch.
    fn wire(&mut self, sb: &Sandbox, ep: &Endpoint, net: &Network) -> Result<()> {
        let (Some(interface), Some(mac), Some(ipv4), Some(subnet)) =
            (ep.interface.clone(), ep.mac, ep.ipv4, net.subnet)
        else {
            return Ok(());
        };
        let net_id = *self
            .nets
            .get(&net.name)
            .ok_or_else(|| Error::not_found("network", &net.name))?;
        let fd = wiring::create_tap(
            &self.dirs.netns_path(&sb.name),
            TapSpec {
                interface: interface.clone(),
                mac,
                ipv4,
                prefix: subnet.prefix,
                mtu: net.mtu,
                offload: if net.offload {
                    self.offload
                } else {
                    Offload::Off
                },
            },
        )?;
        let label = format!("{}/{}", sb.name, interface);
        let policy = port_security(&net.options)
            .unwrap_or(true)
            .then_some(PortPolicy { mac, ipv4 });
        let port = self.dp.add_port(net_id, label, fd, policy)?;
        self.ports.insert((sb.name.clone(), interface), port);
        links::sync(&self.state, &self.ports, &self.dp, &net.name, None);
        Ok(())
    }

    /// Remove the endpoint's switch port; its TAP disappears with the last fd.
    fn unwire(&mut self, sandbox: &str, ep: &Endpoint) {
        if let Some(port) = self.take_port(sandbox, ep) {
            self.dp.remove_port(port);
        }
        // Port ids are reused: partners must stop naming this one in their blocks.
        links::sync(&self.state, &self.ports, &self.dp, &ep.network, None);
    }

    /// The endpoint's switch port, forgotten here; removing it from the datapath is the
    /// caller's (it waits for every worker).
    fn take_port(&mut self, sandbox: &str, ep: &Endpoint) -> Option<PortId> {
        let interface = ep.interface.clone()?;
        self.ports.remove(&(sandbox.to_string(), interface))
    }

    /// SPEC.md: the default route goes via the gateway of the first non-internal network.
    fn sync_default_route(&self, sb: &Sandbox) -> Result<()> {
        if self.state.shares_host(sb) {
            return Ok(());
        }
        let route = sb.endpoints.iter().find_map(|ep| {
            let net = self.state.network(&ep.network)?;
            if net.driver != Driver::Bridge || net.internal {
                return None;
            }
            Some((net.gateway?, ep.interface.clone()?))
        });
        wiring::set_default_route(&self.dirs.netns_path(&sb.name), route)
    }

    fn sync_default_route_of(&self, sandbox: &str) -> Result<()> {
        self.sync_default_route(self.sandbox(sandbox)?)
    }

    fn network_connect(
        &mut self,
        network: &str,
        sandbox: &str,
        ip: Option<&str>,
        aliases: Vec<String>,
    ) -> Result<()> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        if self.removing.contains(sandbox) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is being removed"
            )));
        }
        if net.driver != Driver::Bridge {
            return Err(Error::invalid(format!(
                "network {network} (driver {}) can only be chosen when a sandbox is created",
                net.driver.name()
            )));
        }
        if let Some(ep) = sb
            .endpoints
            .iter()
            .find(|e| self.driver_of(&e.network) != Some(Driver::Bridge))
        {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is on network {} and cannot join other networks",
                ep.network
            )));
        }
        if sb.endpoint(network).is_some() {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is already connected to network {network}"
            )));
        }
        let ep = self.plan_endpoint(&sb, &net, ip, aliases)?;
        self.wire(&sb, &ep, &net)?;
        let mut updated = sb.clone();
        updated.endpoints.push(ep.clone());
        if let Err(e) = self.sync_default_route(&updated).and_then(|_| {
            self.replace_sandbox(updated.clone());
            self.save()
        }) {
            self.unwire(sandbox, &ep);
            self.replace_sandbox(sb.clone());
            let _ = self.sync_default_route(&sb);
            return Err(e);
        }
        self.refresh_etc(&updated);
        Ok(())
    }

    fn replace_sandbox(&mut self, sb: Sandbox) {
        if let Some(slot) = self.state.sandboxes.iter_mut().find(|s| s.name == sb.name) {
            *slot = sb;
        }
    }

    /// The sandbox leaves the network in the model and its /etc files; the returned teardown
    /// removes its port, after which the caller fixes the default route.
    fn network_disconnect(&mut self, network: &str, sandbox: &str) -> Result<Teardown> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        let Some(ep) = sb.endpoint(network).cloned() else {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is not connected to network {network}"
            )));
        };
        if net.driver != Driver::Bridge {
            return Err(Error::invalid(format!(
                "sandbox {sandbox} cannot leave network {network} (driver {}); remove the sandbox instead",
                net.driver.name()
            )));
        }
        if let Some(port) = sb.ports.iter().find(|p| p.network == network) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} publishes {port} through network {network}; remove the sandbox to unpublish"
            )));
        }
        if self.removing.contains(sandbox) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is being removed"
            )));
        }
        let mut updated = sb.clone();
        updated.endpoints.retain(|e| e.network != network);
        self.replace_sandbox(updated.clone());
        let forgotten = links::forget(&mut self.state, sandbox, Some(network));
        if let Err(e) = self.save() {
            self.replace_sandbox(sb);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.ports.extend(self.take_port(sandbox, &ep));
        self.refresh_etc(&updated);
        Ok(teardown)
    }

    // ---- sandboxes ----------------------------------------------------------------------

    fn sandbox_create(&mut self, req: SandboxCreate) -> Result<String> {
        validate_name("sandbox", &req.name).map_err(Error::Invalid)?;
        if self.state.sandbox(&req.name).is_some() {
            return Err(Error::exists("sandbox", &req.name));
        }
        if self.removing.contains(&req.name) {
            return Err(Error::conflict(format!(
                "sandbox {} is still being removed; try again",
                req.name
            )));
        }
        let networks = if req.networks.is_empty() {
            vec!["bridge".to_string()]
        } else {
            req.networks.clone()
        };
        let mut seen = HashSet::new();
        let mut nets = Vec::new();
        for name in &networks {
            if !seen.insert(name.as_str()) {
                return Err(Error::conflict(format!(
                    "network {name} is given twice: a sandbox joins a network once"
                )));
            }
            nets.push(self.network(name)?.clone());
        }
        let special = nets.iter().find(|n| n.driver != Driver::Bridge);
        if let Some(n) = special
            && nets.len() > 1
        {
            return Err(Error::invalid(format!(
                "network {} (driver {}) cannot be combined with other networks",
                n.name,
                n.driver.name()
            )));
        }
        let host_mode = special.is_some_and(|n| n.driver == Driver::Host);
        let hostname = match (&req.hostname, host_mode) {
            (Some(_), true) => {
                return Err(Error::invalid(
                    "--hostname cannot be set on a sandbox that shares the host's network",
                ));
            }
            (Some(h), false) => {
                validate_hostname(h)?;
                h.clone()
            }
            (None, true) => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            (None, false) => req.name.clone(),
        };
        let mut sb = Sandbox {
            name: req.name.clone(),
            id: new_id(),
            hostname: hostname.clone(),
            endpoints: Vec::new(),
            ports: Vec::new(),
        };
        // Plan every endpoint (addresses, interface names) before creating anything.
        for (i, net) in nets.iter().enumerate() {
            let ip = if i == 0 { req.ip.as_deref() } else { None };
            let ep = self.plan_endpoint(&sb, net, ip, Vec::new())?;
            sb.endpoints.push(ep);
        }
        if req.ip.is_some() && nets[0].driver != Driver::Bridge {
            return Err(Error::invalid("--ip needs a bridge network"));
        }
        sb.ports = self.plan_ports(&req.publish, &nets)?;
        // Bind the host side before creating anything: a taken port fails the request cleanly.
        let host_sockets = sb
            .ports
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        if host_mode {
            namespace::pin_current_netns(&self.dirs.netns_path(&sb.name))?;
        } else {
            self.create_namespaces(&sb)?;
        }
        if let Err(e) = self.bring_up(&sb) {
            self.teardown_of(&sb).run();
            return Err(e);
        }
        self.publish(&sb, host_sockets);
        Ok(sb.name)
    }

    /// Check `-p` specs: a bridge network to carry them, and no clash with what is published.
    fn plan_ports(&self, specs: &[String], nets: &[Network]) -> Result<Vec<PublishedPort>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let Some(carrier) = nets
            .iter()
            .find(|n| n.driver == Driver::Bridge && !n.internal)
        else {
            return Err(Error::invalid(
                "publishing ports (-p) needs a non-internal bridge network",
            ));
        };
        let mut planned: Vec<PublishedPort> = Vec::new();
        for spec in specs {
            let port = ports::parse(spec, &carrier.name)?;
            if let Some(clash) = planned.iter().find(|p| p.clashes_with(&port)) {
                return Err(Error::conflict(format!("{port} clashes with {clash}")));
            }
            for other in &self.state.sandboxes {
                if let Some(clash) = other.ports.iter().find(|p| p.clashes_with(&port)) {
                    return Err(Error::conflict(format!(
                        "cannot publish {port}: sandbox {} already publishes {clash}",
                        other.name
                    )));
                }
            }
            planned.push(port);
        }
        Ok(planned)
    }

    /// Hand bound host sockets to the gateways that serve them.
    fn publish(&mut self, sb: &Sandbox, sockets: Vec<HostSocket>) {
        for (port, socket) in sb.ports.iter().zip(sockets) {
            let Some(ep) = sb.endpoint(&port.network) else {
                continue;
            };
            let (Some(ip), Some(mac)) = (ep.ipv4, ep.mac) else {
                continue;
            };
            let Some((_, gateway)) = self.gateways.get(&port.network) else {
                continue;
            };
            let id = self.next_publication;
            self.next_publication += 1;
            let target = PublishTarget {
                id,
                sandbox: std::net::SocketAddrV4::new(ip, port.port),
                sandbox_mac: mac,
            };
            gateway.command(match socket {
                HostSocket::Tcp(l) => GatewayCommand::PublishTcp(target, l),
                HostSocket::Udp(s) => GatewayCommand::PublishUdp(target, s),
            });
            self.publications
                .entry(sb.name.clone())
                .or_default()
                .push((port.network.clone(), id));
        }
    }

    /// The gateways and ids of a sandbox's published ports, forgotten here; the teardown
    /// stops serving them.
    fn take_publications(&mut self, sandbox: &str) -> Vec<(Commander, u64)> {
        self.publications
            .remove(sandbox)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(network, id)| {
                let (_, gateway) = self.gateways.get(&network)?;
                Some((gateway.commander(), id))
            })
            .collect()
    }

    fn bring_up(&mut self, sb: &Sandbox) -> Result<()> {
        for (ep, net) in sb
            .endpoints
            .iter()
            .filter_map(|ep| Some((ep, self.state.network(&ep.network)?.clone())))
            .collect::<Vec<_>>()
        {
            self.wire(sb, ep, &net)?;
        }
        self.sync_default_route(sb)?;
        self.state.sandboxes.push(sb.clone());
        if let Err(e) = self.save() {
            self.state.sandboxes.pop();
            return Err(e);
        }
        Ok(())
    }

    /// What removing a sandbox's ports, publications and namespaces takes (not its model
    /// entry): the handles come out of the controller's maps now, the waiting comes later.
    fn teardown_of(&mut self, sb: &Sandbox) -> Teardown {
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.unpublish = self.take_publications(&sb.name);
        for ep in &sb.endpoints {
            teardown.ports.extend(self.take_port(&sb.name, ep));
        }
        teardown.pins = vec![
            self.dirs.netns_path(&sb.name),
            self.dirs.utsns_path(&sb.name),
        ];
        teardown.dirs = vec![self.dirs.etc_dir(&sb.name)];
        teardown
    }

    /// Remove a sandbox from the model and the state file; the teardown releases the rest.
    fn commit_sandbox_removal(&mut self, name: &str) -> Result<Teardown> {
        let index = self
            .state
            .sandboxes
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::not_found("sandbox", name))?;
        let sb = self.state.sandboxes.remove(index);
        let forgotten = links::forget(&mut self.state, name, None);
        if let Err(e) = self.save() {
            self.state.sandboxes.insert(index, sb);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
        Ok(self.teardown_of(&sb))
    }

    /// Network and UTS namespaces of a sandbox that has its own, with its /etc files. (Its
    /// mount view is made by each `tapnet exec`.) On failure nothing is left behind.
    fn create_namespaces(&self, sb: &Sandbox) -> Result<()> {
        let etc = self.dirs.etc_dir(&sb.name);
        let made = etc_files::write(&etc, &self.state, sb).and_then(|_| {
            namespace::create(
                &self.dirs.netns_path(&sb.name),
                Some((&self.dirs.utsns_path(&sb.name), &sb.hostname)),
                wiring::loopback_up,
            )
        });
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&etc);
        }
        made
    }

    /// Rewrite a live sandbox's /etc/hosts and /etc/resolv.conf after its networks changed.
    fn refresh_etc(&self, sb: &Sandbox) {
        if !self.state.shares_host(sb)
            && let Err(e) = etc_files::write(&self.dirs.etc_dir(&sb.name), &self.state, sb)
        {
            eprintln!("tapnet: sandbox {}: {e}", sb.name);
        }
    }

    // ---- observation --------------------------------------------------------------------

    fn bridge_net_id(&self, network: &str) -> Result<NetId> {
        let net = self.network(network)?;
        self.nets.get(&net.name).copied().ok_or_else(|| {
            Error::invalid(format!(
                "network {network} (driver {}) has no switch",
                net.driver.name()
            ))
        })
    }

    fn fdb(&self, network: &str) -> Result<Vec<FdbRow>> {
        let id = self.bridge_net_id(network)?;
        Ok(self
            .dp
            .fdb_entries(id)
            .into_iter()
            .map(|e| {
                let port = self
                    .dp
                    .port_label(e.port)
                    .unwrap_or_else(|| format!("port {}", e.port));
                let kind = if port == GATEWAY_PORT {
                    "gateway"
                } else {
                    "learned"
                };
                FdbRow {
                    mac: e.mac.to_string(),
                    port,
                    age_s: e.age_secs,
                    kind: kind.to_string(),
                }
            })
            .collect())
    }

    fn stats(&self, network: Option<&str>) -> Result<Vec<StatsRow>> {
        let filter = network.map(|n| self.bridge_net_id(n)).transpose()?;
        let names: HashMap<NetId, &String> = self.nets.iter().map(|(n, id)| (*id, n)).collect();
        Ok(self
            .dp
            .port_reports()
            .into_iter()
            .filter(|r| filter.is_none_or(|id| id == r.network))
            .map(|r| StatsRow {
                network: names
                    .get(&r.network)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                port: r.label,
                drops: r.stats.drops(),
                rx_packets: r.stats.rx_packets,
                rx_bytes: r.stats.rx_bytes,
                tx_packets: r.stats.tx_packets,
                tx_bytes: r.stats.tx_bytes,
                rx_malformed: r.stats.rx_malformed,
                rx_oversize: r.stats.rx_oversize,
                rx_filtered: r.stats.rx_filtered,
                tx_dropped: r.stats.tx_dropped,
                rx_spoofed: r.stats.rx_spoofed,
                learn_refused: r.stats.learn_refused,
            })
            .collect())
    }
}
