//! What travels over the control socket: one JSON request line, one JSON response line.
//! The view types are also what `--format json` prints, so their field names are stable.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    pub mtu: Option<u32>,
    pub vni: Option<u32>,
    /// Offloads on the network's TAPs; `None` means on.
    pub offload: Option<bool>,
    #[serde(default)]
    pub options: Vec<String>,
    /// Dual-stack (`--ipv6`): an IPv6 prefix too, `subnet6` or one from the daemon's ULA pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    /// No IPv4 side (`--no-ipv4`, Docker's `--ipv4=false`): an IPv6-only network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ipv4: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SandboxCreate {
    pub name: String,
    #[serde(default)]
    pub networks: Vec<String>,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    /// The IPv6 address on the first network (`--ip6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
}

/// `tapnet port add`: a port that is not a sandbox's TAP.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PortAdd {
    pub network: String,
    pub name: String,
    /// The unix stream socket a QEMU `-netdev stream` connects to.
    pub qemu_socket: Option<String>,
    /// Or an existing interface of the daemon's namespace (root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Or a unix socket the daemon serves as a vhost-user-net backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    /// `-p [HOSTIP:]HOSTPORT:PORT[/udp]`: host ports the gateway forwards to the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// A port as `tapnet port ls` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub network: String,
    /// "qemu-socket", "vhost-user" or "iface".
    pub kind: String,
    /// The socket's path, or the interface's name.
    pub path: String,
    /// How an `iface` port moves frames: "ring" (mmap'd packet rings) or "plain" (a system
    /// call per frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    pub mac: String,
    /// CIDR form, as endpoints'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// A VM holds the socket now.
    pub connected: bool,
    /// Connections accepted since the daemon started.
    pub connections: u64,
    /// Frames for the VM dropped: its socket and the port's queue were full.
    pub to_vm_dropped: u64,
    /// Frames for the VM while none was connected (dropped).
    pub to_vm_absent: u64,
    /// Link impairments in force on the port (`tapnet link set NAME NET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<crate::datapath::impair::Impairment>,
    /// Sandboxes and ports it is blocked from (`tapnet link block`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// Published ports, in Docker's form (`0.0.0.0:8080->80/tcp`), as a sandbox's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    NetworkCreate(NetworkCreate),
    NetworkList,
    NetworkInspect {
        name: String,
    },
    NetworkRemove {
        name: String,
    },
    NetworkConnect {
        network: String,
        sandbox: String,
        ip: Option<String>,
        #[serde(default)]
        aliases: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip6: Option<String>,
    },
    NetworkDisconnect {
        network: String,
        sandbox: String,
    },
    SandboxCreate(SandboxCreate),
    SandboxList,
    SandboxInspect {
        name: String,
    },
    SandboxRemove {
        name: String,
        #[serde(default)]
        force: bool,
    },
    Fdb {
        network: String,
    },
    Stats {
        network: Option<String>,
    },
    /// Stream the network's frames as pcap after the answer line, until the client hangs up.
    Capture {
        network: String,
        sandbox: Option<String>,
        snaplen: Option<u32>,
    },
    /// Stop the daemon (as SIGTERM would).
    Shutdown,
    /// The daemon's mode, version, state dir and the kernel features it found.
    Info,
    /// The committed state, as the state file's JSON (`tapnet system export`).
    SystemExport,
    /// Impair an endpoint's link (`tapnet link set`).
    LinkSet(super::lab::LinkChange),
    LinkShow {
        network: Option<String>,
    },
    /// Clear impairments and blocks: all, or one network's, or one sandbox's.
    LinkReset {
        network: Option<String>,
        sandbox: Option<String>,
    },
    /// Explain what the switch would do with a frame (`tapnet trace`); sends nothing.
    Trace(super::lab::TraceRequest),
    /// Stream a JSON line per real frame of the network with the decision taken, after the
    /// answer line, until the client hangs up (`tapnet trace --live`).
    TraceLive {
        network: String,
        sandbox: Option<String>,
    },
    /// CNI ADD (`tapnet-cni`): a TAP named `ifname` in the namespace at `netns` on `network`
    /// (created with `subnet` if missing), addressed, routed, its fd held by the daemon.
    CniAdd {
        network: String,
        subnet: Option<String>,
        container_id: String,
        ifname: String,
        netns: String,
        /// The configuration's gateway and IPv6 prefix and gateway, for a network ADD makes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnet6: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway6: Option<String>,
    },
    /// CNI DEL: remove the attachment; nothing to remove is fine.
    CniDel {
        container_id: String,
        ifname: String,
    },
    /// CNI CHECK: the attachment exists and its link is in place.
    CniCheck {
        container_id: String,
        ifname: String,
    },
    /// CNI GC: remove the attachments on `network` that are not in `valid` (container id,
    /// interface), the runtime's `cni.dev/valid-attachments`. Answers the removed ones.
    CniGc {
        network: String,
        valid: Vec<(String, String)>,
    },
    /// Serve (or stop serving) Docker's network plugin protocol as plugin `name`.
    PluginDocker {
        name: String,
        #[serde(default)]
        stop: bool,
    },
    /// A VM's port (`tapnet port add`).
    PortAdd(PortAdd),
    PortList {
        network: Option<String>,
    },
    PortRemove {
        name: String,
    },
    /// Cut (or restore, `block: false`) traffic between two sandboxes.
    LinkBlock {
        a: String,
        b: String,
        network: Option<String>,
        block: bool,
    },
    /// Append a policy rule to a network (`tapnet policy add`); its name is made when empty.
    PolicyAdd {
        network: String,
        rule: crate::control::policy::PolicyRule,
        /// Forget the network's admitted flows, so the new rules apply to them too.
        #[serde(default)]
        reset_flows: bool,
    },
    /// A network's rules with their counters (`tapnet policy ls`).
    PolicyList {
        network: String,
    },
    /// Remove a rule by name (`tapnet policy rm`).
    PolicyRemove {
        network: String,
        name: String,
    },
}

/// A network's policy (`tapnet policy ls --json`, and the answer of add and rm).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    pub network: String,
    /// Sandboxes may reach each other (`--opt icc`).
    pub icc: bool,
    /// What a flow no rule matches gets (`--opt policy_default`).
    pub default: crate::control::policy::Action,
    /// Flows in the connection table now, and its bound (0 until rules or a deny default).
    pub flows: u64,
    pub max_flows: u64,
    /// Frames the policy dropped, by reason.
    pub drops: crate::datapath::policy::PolicyDrops,
    /// In order: the first that matches decides.
    pub rules: Vec<PolicyRuleView>,
}

/// A rule with what it decided: the first frame of each flow it admitted, every frame it
/// refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRuleView {
    #[serde(flatten)]
    pub rule: crate::control::policy::PolicyRule,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Ok { result: serde_json::Value },
    Error { message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    pub sandbox: String,
    pub interface: Option<String>,
    pub mac: Option<String>,
    /// CIDR form, as Docker's inspect: "172.18.0.2/16".
    pub ipv4: Option<String>,
    /// CIDR form too: "fd00:a::2/64"; absent on an IPv4-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// What the endpoint is when not a sandbox's TAP: "qemu-socket" or "iface" (`tapnet port
    /// add`), "cni" (an attachment `tapnet-cni` made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A remote network's endpoint: the plugin's EndpointOperInfo answer, asked at inspect
    /// (`{"error": "..."}` when the plugin could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_info: Option<BTreeMap<String, serde_json::Value>>,
    /// A CNI attachment's container id (its `sandbox` shows the first 12 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// A CNI attachment's namespace, as the runtime named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkView {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 side of a dual-stack or IPv6-only network; absent on an IPv4-only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub mtu: u32,
    pub vni: Option<u32>,
    pub mac_aging_s: u32,
    pub offload: bool,
    pub options: BTreeMap<String, String>,
    pub endpoints: Vec<EndpointView>,
    /// Live outbound NAT flows through the gateway (bridge networks).
    pub nat: Option<NatView>,
    /// The VTEP, peers and remote stations of an overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayView>,
    /// The host's interface on the network (`host_access=on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostAccessView>,
}

/// The host's interface on a `host_access` network: its name in the daemon's namespace and its
/// addresses with their prefix lengths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostAccessView {
    pub interface: String,
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverlayView {
    /// This host's VTEP (address:port).
    pub vtep: String,
    /// The other hosts' VTEPs.
    pub peers: Vec<String>,
    /// Remote stations learned, each against the VTEP behind which it lives.
    pub remote: Vec<RemoteView>,
    /// Counters of the VTEP (shared by the overlay networks bound to it).
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_malformed: u64,
    pub rx_bad_flags: u64,
    pub rx_foreign_vni: u64,
    pub rx_unknown_peer: u64,
    pub tx_dropped: u64,
    /// Received frames the network's switch port had no room for.
    #[serde(default)]
    pub rx_dropped: u64,
    /// ARP requests for remote addresses the cluster store knows, answered locally.
    #[serde(default)]
    pub arp_answered: u64,
    /// Neighbour Solicitations for remote IPv6 addresses the store knows, answered locally.
    #[serde(default)]
    pub nd_answered: u64,
    /// Endpoints of other hosts, from the cluster store (`daemon --store`).
    #[serde(default)]
    pub remote_endpoints: Vec<RemoteEndpointView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteEndpointView {
    pub sandbox: String,
    /// The daemon it lives on (its VTEP address).
    pub host: String,
    /// None on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// On a network with an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    pub mac: String,
    pub vtep: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteView {
    pub mac: String,
    pub vtep: String,
    pub age_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NatView {
    pub tcp_flows: usize,
    pub udp_flows: usize,
    /// New TCP flows refused (RST, or a published connection closed) at a cap.
    #[serde(default)]
    pub tcp_refused: usize,
    /// UDP flows evicted, idlest first, to stay under a cap.
    #[serde(default)]
    pub udp_evicted: usize,
    /// DNS queries answered SERVFAIL at once, and TCP clients closed, because the DNS server's
    /// pools were busy.
    #[serde(default)]
    pub dns_shed: u64,
    /// DNS queries the gateway's server received (UDP and TCP); they are not NAT flows.
    #[serde(default)]
    pub dns_queries: u64,
    /// Of those, answered from the network's names (SERVFAIL when no upstream answered too).
    #[serde(default)]
    pub dns_local_answers: u64,
    /// Host peers the network's published UDP ports remember (they expire when idle).
    #[serde(default)]
    pub published_udp_peers: usize,
    /// TCP connections and UDP datagrams to the gateway address refused because the network
    /// keeps the host's loopback closed (`host_loopback=off`).
    #[serde(default)]
    pub host_loopback_refused: usize,
    /// The gateway's DHCPv4 server (none on a network without IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpView>,
}

/// Messages of the gateway's DHCPv4 server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DhcpView {
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// Requests from MACs tapnet does not know: not answered.
    pub unknown_clients: u64,
    pub releases: u64,
    pub declines: u64,
    /// Malformed, relayed or for another server: not answered.
    pub ignored: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceView {
    pub network: String,
    pub interface: Option<String>,
    pub mac: Option<String>,
    pub ipv4: Option<String>,
    /// "ADDR/LEN" on a network with an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Link impairments in force on this interface (`tapnet link set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<crate::datapath::impair::Impairment>,
    /// Sandboxes cut off from this interface (`tapnet link block`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// A remote network's endpoint: the plugin's EndpointOperInfo answer, asked at inspect
    /// (`{"error": "..."}` when the plugin could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_info: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxView {
    pub name: String,
    pub id: String,
    pub hostname: String,
    /// The pinned network namespace (`nsenter --net=PATH` accepts it in root mode).
    pub netns: String,
    /// The pinned UTS namespace; none for sandboxes on the host's network.
    pub utsns: Option<String>,
    /// The directory whose hosts, resolv.conf and hostname `tapnet exec` shows as /etc files.
    pub etc: Option<String>,
    /// How to enter the sandbox by hand (a shell command line), for the daemon's mode.
    pub enter: String,
    pub interfaces: Vec<InterfaceView>,
    pub ports: Vec<String>,
}

/// What `tapnet info` shows of the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InfoView {
    pub version: String,
    pub pid: i32,
    /// `root` or `rootless`.
    pub mode: String,
    /// Rootless: the process holding the daemon's user and mount namespaces.
    pub holder_pid: Option<i32>,
    pub state_dir: String,
    /// The daemon's /proc/self/uid_map, flattened ("0 0 4294967295" in root mode).
    pub uid_map: String,
    pub datapath_threads: usize,
    /// Queues a sandbox's TAP gets: one per datapath thread, or 1.
    #[serde(default)]
    pub tap_queues: usize,
    /// How the datapath threads do TAP I/O: `uring ...` (io_uring, the default) or `epoll`.
    #[serde(default)]
    pub datapath_io: String,
    /// Frames each datapath thread has read since the daemon started.
    #[serde(default)]
    pub frames_read: Vec<u64>,
    pub networks: usize,
    pub sandboxes: usize,
    pub features: crate::rootless::checks::Features,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    /// `sandbox/interface` behind which the station was learned.
    pub port: String,
    pub age_s: u32,
    /// `learned` for stations the switch learned from traffic.
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub network: String,
    pub port: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    pub rx_malformed: u64,
    pub rx_oversize: u64,
    pub rx_filtered: u64,
    pub tx_dropped: u64,
    /// Dropped by port security (a source that is not the port's own).
    #[serde(default)]
    pub rx_spoofed: u64,
    /// `rx_spoofed` by reason: every reason's name (`source_mac`, `ipv6_source`,
    /// `router_advertisement`, ...) and its count.
    #[serde(default)]
    pub spoofed_by: std::collections::BTreeMap<String, u64>,
    /// Source MACs not learned: the port owns its limit of stations, or the table is full.
    #[serde(default)]
    pub learn_refused: u64,
    /// The gateway's port only: connections and datagrams to the gateway address refused
    /// because the network keeps the host's loopback closed (`host_loopback=off`).
    #[serde(default)]
    pub host_loopback_refused: u64,
    /// Dropped by the network's policy (`icc=false`, rules, the default, a full table).
    #[serde(default)]
    pub rx_policy: u64,
    /// The gateway's port only: frames the gateway could not hand the switch, its inbox full.
    #[serde(default)]
    pub rx_queue_full: u64,
    /// On the row of a network's gateway port: its DHCPv4 server's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpView>,
}
