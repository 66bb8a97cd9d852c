//! The CNM objects as they are persisted: networks, sandboxes and the endpoints that join them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::drivers::options::NetOptions;
use crate::wire::MacAddr;
use crate::wire::{Ipv4Net, Ipv6Net};

pub const DEFAULT_MTU: u32 = 1500;
pub const MIN_MTU: u32 = 68;
/// The largest MTU a TAP takes with a 64 KiB frame buffer.
pub const MAX_MTU: u32 = 65520;

/// libnetwork's drivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Userspace L2 switch: TAP endpoints, MAC learning, isolation.
    Bridge,
    /// The sandbox shares the daemon's network namespace.
    Host,
    /// Own namespace with loopback only.
    Null,
    /// Bridge switching whose L2 domain spans hosts over VXLAN.
    Overlay,
    /// A third-party plugin serves the network (`remote:NAME`; the name is `Network::plugin`).
    Remote,
}

/// The networks every state dir has, and the only ones that are built in.
pub const BUILTIN: [(&str, Driver); 3] = [
    ("bridge", Driver::Bridge),
    ("host", Driver::Host),
    ("none", Driver::Null),
];

impl Driver {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "bridge" => Ok(Driver::Bridge),
            "host" => Ok(Driver::Host),
            "null" => Ok(Driver::Null),
            "overlay" => Ok(Driver::Overlay),
            s if s.starts_with("remote:") => Ok(Driver::Remote),
            s => Err(format!(
                "unknown driver {s:?} (known: bridge, host, null, overlay, remote:NAME)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Overlay => "overlay",
            Driver::Remote => "remote",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: Driver,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 prefix of a dual-stack or IPv6-only network (`--ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub mtu: u32,
    pub vni: Option<u32>,
    pub mac_aging_s: u32,
    /// Checksum and segmentation offloads on this network's TAPs (unless the daemon turns them
    /// off for all).
    #[serde(default = "default_true")]
    pub offload: bool,
    pub options: BTreeMap<String, String>,
    /// One of the networks every state dir has (`bridge`, `host`, `none`).
    pub builtin: bool,
    /// The plugin serving a `remote` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Ordered allow/deny rules between its sandboxes (`tapnet policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<crate::control::policy::PolicyRule>,
    /// `options` as the driver validated them when the network was planned or loaded; not
    /// persisted (the option map is).
    #[serde(skip)]
    pub typed: Option<NetOptions>,
}

impl Network {
    /// A bare network of `driver` for unit tests: no subnets, no options.
    #[cfg(test)]
    pub fn for_test(name: &str, driver: Driver) -> Network {
        Network {
            name: name.into(),
            id: name.into(),
            driver,
            subnet: None,
            gateway: None,
            subnet6: None,
            gateway6: None,
            ip_range: None,
            internal: false,
            mtu: 1500,
            vni: None,
            mac_aging_s: 300,
            offload: true,
            options: BTreeMap::new(),
            builtin: false,
            plugin: None,
            policy: Vec::new(),
            typed: None,
        }
    }

    /// The network's options, typed. A network that was never validated has none: that is a
    /// bug, and an error rather than a silent default.
    pub fn opts(&self) -> crate::error::Result<&NetOptions> {
        self.typed.as_ref().ok_or_else(|| {
            crate::error::Error::invalid(format!(
                "network {}: its options were not validated",
                self.name
            ))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    /// `eth0`, `eth1`, ...; none for host and null endpoints.
    pub interface: Option<String>,
    pub mac: Option<MacAddr>,
    pub ipv4: Option<Ipv4Addr>,
    /// Set on networks with an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
    /// Link impairments on the endpoint's port (`tapnet link set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<crate::datapath::impair::Impairment>,
    /// Sandboxes on the same network whose frames never reach this endpoint (`tapnet link
    /// block`; the partner's endpoint lists this sandbox too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

/// A sandbox as persisted. Its namespace pins and /etc files live at paths derived from the
/// state dir and its name (`paths::StateDir`); none is stored here, so an edited state file
/// cannot point the daemon at other files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub name: String,
    pub id: String,
    pub hostname: String,
    /// In connect order.
    pub endpoints: Vec<Endpoint>,
    /// Published ports (`-p`).
    #[serde(default)]
    pub ports: Vec<super::ports::PublishedPort>,
}

impl Sandbox {
    pub fn endpoint(&self, network: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network == network)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything the state file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Which journal follows this snapshot (`store.rs`); 0 in a state file of version 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    pub networks: Vec<Network>,
    /// Shared with the store's copy of what was committed until changed (`Arc::make_mut`),
    /// so that finding what a commit changed compares pointers, not sandboxes; indexed by
    /// name and by the addresses they take (`sandbox_list.rs`).
    pub sandboxes: super::sandbox_list::SandboxList,
    /// Attachments made by CNI runtimes through `tapnet-cni`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni: Vec<CniAttachment>,
    /// Docker network plugins the daemon serves (`tapnet plugin docker`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_plugins: Vec<DockerPlugin>,
    /// Ids of the newest client requests this state holds the commit of (see request_log).
    #[serde(default, skip_serializing_if = "std::collections::VecDeque::is_empty")]
    pub committed_requests: std::collections::VecDeque<String>,
    /// The random ULA /48 (RFC 4193) that `--ipv6` networks without a prefix take /64s of;
    /// picked once, when the first one is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ula: Option<Ipv6Net>,
    /// Ports that are not sandboxes' TAPs (`tapnet port add`): VMs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_ports: Vec<VmPort>,
}

/// How a `VmPort` meets its VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmPortKind {
    /// A unix stream socket the daemon listens on (QEMU's `-netdev stream`).
    QemuSocket,
    /// An existing interface of the daemon's namespace, through a packet socket (root).
    Iface,
    /// A unix socket the daemon serves as a vhost-user-net backend (QEMU's `-netdev vhost-user`).
    VhostUser,
}

impl VmPortKind {
    /// `path` is a unix socket's (the others name an interface).
    pub fn is_socket(self) -> bool {
        !matches!(self, VmPortKind::Iface)
    }

    pub fn name(self) -> &'static str {
        match self {
            VmPortKind::QemuSocket => "qemu-socket",
            VmPortKind::Iface => "iface",
            VmPortKind::VhostUser => "vhost-user",
        }
    }
}

/// A port of a network that is not a sandbox's TAP: a station (a VM) with an address from the
/// network's IPAM and a MAC like a sandbox's, reached through `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmPort {
    pub name: String,
    pub network: String,
    pub kind: VmPortKind,
    /// The socket's path (absolute) of a `QemuSocket` or `VhostUser` port, the interface's name
    /// of an `Iface`.
    pub path: String,
    pub mac: MacAddr,
    /// None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// On a network with an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// An `Iface` port's interface was down before tapnet set it up: `port rm` puts it down
    /// again (kept across restarts, when the interface is found up).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub was_down: bool,
    /// `tapnet link set NAME NET`: impairments of the link to the VM, as a sandbox endpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<crate::datapath::impair::Impairment>,
    /// `tapnet link block`: sandboxes and ports this port's traffic may not reach on its
    /// network, as an endpoint's `blocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// `port add -p`: host ports forwarded to the VM by its network's gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<super::ports::PublishedPort>,
}

/// A TAP that `tapnet-cni` asked for in a namespace the runtime made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    pub ifname: String,
    /// The runtime's path of the namespace.
    pub netns: String,
    pub network: String,
    /// None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// On a network with an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
}

/// tapnet as a Docker network plugin: what dockerd told it. dockerd does not replay
/// CreateNetwork or CreateEndpoint after a plugin restart, so all of it is persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DockerPlugin {
    pub name: String,
    /// Served now; `plugin docker --stop` keeps what dockerd made and clears this.
    #[serde(default = "default_true")]
    pub serving: bool,
    /// Docker's NetworkID to the tapnet network made for it.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// Docker's EndpointID to the endpoint.
    #[serde(default)]
    pub endpoints: BTreeMap<String, DockerEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// The tapnet network.
    pub network: String,
    /// None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address on a network with an IPv6 prefix: dockerd's, or tapnet's pick when
    /// dockerd sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    /// The TAP made at Join (`tn` + 8 hex digits in the daemon's namespace until dockerd
    /// moves it); `None` until joined, and after Leave.
    pub tap: Option<String>,
    /// dockerd's path of the container's network namespace, from Join.
    pub sandbox_key: Option<String>,
    /// Ports published for it (`docker run -p`), from ProgramExternalConnectivity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<super::ports::PublishedPort>,
}

impl State {
    /// 2: a snapshot followed by a journal (1: the state file alone).
    pub const VERSION: u32 = 2;

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }
    pub fn sandbox(&self, name: &str) -> Option<&Sandbox> {
        self.sandboxes.get(name).map(|s| &**s)
    }
    /// The Docker plugin whose network `name` is, if dockerd made it.
    pub fn docker_owner(&self, name: &str) -> Option<&DockerPlugin> {
        self.docker_plugins
            .iter()
            .find(|p| p.networks.values().any(|n| n == name))
    }
    /// (sandbox, endpoint) pairs on network `name`.
    pub fn endpoints_on<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a Sandbox, &'a Endpoint)> + 'a {
        self.sandboxes.iter().flat_map(move |s| {
            s.endpoints
                .iter()
                .filter(move |e| e.network == name)
                .map(move |e| (&**s, e))
        })
    }
}

fn default_true() -> bool {
    true
}

/// A 64-hex-digit random id, like Docker's.
pub fn new_id() -> crate::error::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        crate::error::Error::Remote(format!(
            "cannot make an id: the kernel's random source: {e}"
        ))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Names of networks and sandboxes become file names and interface labels: keep them tame.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}
