//! The command line: clap definitions and dispatch to the client or the daemon.

pub mod capture;
pub mod docs;
pub mod exec;
pub mod lab;
pub mod names;
pub mod output;
pub mod policy;
pub mod reset;
pub mod views;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::client::Client;
use crate::api::types::{
    FdbRow, InfoView, NetworkCreate, NetworkView, PortAdd, PortView, Request, SandboxCreate,
    SandboxView, StatsRow,
};
use crate::daemon::{self, DaemonOptions};
use crate::datapath::IoMode;
use crate::error::{Error, Result};
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use clap_complete::Shell;
use output::Format;

/// `tapnet -V` and `tapnet version`: the package version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("TAPNET_GIT_REV"),
    ")"
);

/// Environment variables read in place of absent flags. Read by hand rather than with clap's
/// `env`: clap counts a value from the environment as a flag the user typed and then shows it
/// in the usage line of every error (`Usage: tapnet network create --state-dir <DIR> <NAME>`).
pub const ENV_STATE_DIR: &str = "TAPNET_STATE_DIR";
pub const ENV_NAT_ALLOW: &str = "TAPNET_NAT_ALLOW";
pub const ENV_DNS_UPSTREAM: &str = "TAPNET_DNS_UPSTREAM";
pub const ENV_METRICS: &str = "TAPNET_METRICS";

const GLOBAL_OPTIONS: &str = "Global options";

/// The end of `tapnet --help` and of tapnet(1): what every command shares.
const AFTER_HELP: &str = "\
Every command but daemon, demo, completion, man and version is a client of the daemon of the
state dir, started in the background on first use (unless --no-autostart).

Exit status: 0 success; 1 failure, with one line `tapnet: error: ...` on stderr; 2 usage
error. exec and run return the command's status.

Environment: TAPNET_STATE_DIR (--state-dir), TAPNET_NAT_ALLOW (daemon --nat-allow),
TAPNET_DNS_UPSTREAM (daemon --dns-upstream); a flag wins over its variable.";

#[derive(Parser, Debug)]
#[command(
    name = "tapnet",
    version = VERSION,
    about = "Userspace virtual switch for containers: Docker's CNM over TAP devices",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// State dir of the daemon to talk to [env: TAPNET_STATE_DIR] [default: /run/tapnet for
    /// root, $XDG_RUNTIME_DIR/tapnet otherwise].
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL_OPTIONS)]
    pub state_dir: Option<PathBuf>,
    /// Fail when no daemon answers instead of starting one in the background.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    pub no_autostart: bool,
}

/// `--format`: how objects are printed.
#[derive(Args, Debug, Clone, Copy)]
pub struct FormatArg {
    /// Output format: aligned table for people, one JSON document for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces with endpoints).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Manage ports that are not sandboxes: VMs (QEMU's `-netdev stream` on a unix socket).
    #[command(subcommand)]
    Port(PortCmd),
    /// Run a command inside a sandbox (its network, UTS and mount namespaces).
    Exec {
        /// Name of the sandbox.
        sandbox: String,
        /// The command and its arguments (after `--`); its exit status is tapnet's (127 if not
        /// found).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Create a sandbox, run a command in it, and optionally remove it.
    Run(RunArgs),
    /// Show a network's MAC table.
    Fdb {
        /// Name of the network (bridge driver).
        network: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show per-port counters, with drops by reason.
    Stats {
        /// Only this network's ports [default: every network].
        network: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Capture a network's frames (pcap, LINKTYPE_ETHERNET), segmented as on a wire.
    Capture {
        /// Name of the network (bridge driver).
        network: String,
        /// Only frames from or to this sandbox, or this port (`tapnet port add`) [default: every
        /// port].
        #[arg(long, value_name = "SANDBOX")]
        sandbox: Option<String>,
        /// Write pcap to FILE (`-` for stdout) [default: print a line per frame].
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<String>,
        /// Stop after COUNT frames [default: run until interrupted].
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
        /// Bytes kept of each frame, 14-262144 [default: 262144].
        #[arg(short = 's', long, value_name = "BYTES")]
        snaplen: Option<u32>,
    },
    /// Impair links (delay, loss, rate, down, ...) and block traffic between sandboxes.
    #[command(subcommand)]
    Link(lab::LinkCmd),
    /// Allow or deny traffic between sandboxes (and through the gateway) by rules.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Serve other tools' network plugin protocols from the daemon.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Explain what the switch would do with a frame, step by step, without sending it; or
    /// (--live) show real frames with the decision taken.
    Trace(lab::TraceArgs),
    /// Build (or update) what a topology file describes; twice changes nothing.
    Up(lab::TopologyArgs),
    /// Remove exactly what `up` of a topology file made.
    Down(lab::TopologyArgs),
    /// Run the switch and the control API in the foreground (clients start it on first use).
    Daemon(DaemonArgs),
    /// Whole-state-dir operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// Build the seed topology in a throwaway state dir, send traffic, show the result.
    ///
    /// The state dir is a new directory under the temp dir, or `--state-dir DIR` when DIR does
    /// not exist yet; either way it is removed at the end. An existing state dir is refused, so
    /// the demo can never remove a daemon's networks and sandboxes; so is --no-autostart, since
    /// the demo starts its own daemon.
    Demo,
    /// Show the daemon's mode (root or rootless), state dir, version and kernel features.
    Info {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Print a shell completion script on stdout.
    ///
    /// bash: `tapnet completion bash > /etc/bash_completion.d/tapnet`;
    /// zsh: `tapnet completion zsh > "${fpath[1]}/_tapnet"`;
    /// fish: `tapnet completion fish > ~/.config/fish/completions/tapnet.fish`.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page tapnet(1) on stdout, or write every page to a directory.
    Man {
        /// Write tapnet.1 and one page per subcommand (tapnet-network-create.1, ...) into DIR
        /// [default: print tapnet.1 on stdout].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the version and the git revision of the build.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// Serve Docker's network plugin protocol on /run/docker/plugins/NAME.sock, so that
    /// `docker network create -d NAME` puts containers on tapnet's switch. The daemon serves it
    /// again after a restart, until --stop.
    Docker {
        /// The plugin's name, which is dockerd's driver name.
        #[arg(long, value_name = "NAME", default_value = crate::plugin::docker::DEFAULT_NAME)]
        name: String,
        /// Stop serving (what dockerd made stays, for when it serves again) [default: start].
        #[arg(long)]
        stop: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network; prints its ID.
    Create {
        /// Name of the network: 1-64 letters, digits, '-', '_' or '.'.
        name: String,
        /// Network driver: bridge; overlay (VXLAN between hosts); or remote:NAME for a network
        /// plugin found as STATE_DIR/plugins/NAME.sock or /run/docker/plugins/NAME.sock (or a
        /// .spec/.json there). Host and null exist once.
        #[arg(long, default_value = "bridge")]
        driver: String,
        /// Subnet, once per address family: IPv4 [default: the next free /16 from
        /// 172.18.0.0/16, then /24s of 10.0.0.0/8]; IPv6, /64 to /120, with --ipv6 [default:
        /// the next free /64 of the daemon's random ULA /48].
        #[arg(long, value_name = "CIDR", value_parser = any_subnet)]
        subnet: Vec<String>,
        /// Gateway address inside the subnet of its family, once per family; needs that
        /// --subnet [default: the subnet's first address].
        #[arg(long, value_name = "IP", value_parser = any_address)]
        gateway: Vec<String>,
        /// Dual-stack: an IPv6 subnet too (the --subnet given, or one from the ULA pool).
        #[arg(long)]
        ipv6: bool,
        /// No IPv4 subnet, with --ipv6: an IPv6-only network (Docker's --ipv4=false).
        #[arg(long)]
        no_ipv4: bool,
        /// Part of the subnet that endpoint addresses are taken from; needs --subnet
        /// [default: the whole subnet].
        #[arg(long, value_name = "CIDR", value_parser = ipv4_subnet)]
        ip_range: Option<String>,
        /// No way out of the network (no default route, no NAT, no forwarded DNS).
        #[arg(long)]
        internal: bool,
        /// MTU of the network's interfaces, 68-65520; overlay networks default to 1450
        /// [default: 1500].
        #[arg(long, value_name = "BYTES")]
        mtu: Option<u32>,
        /// VXLAN network identifier, 1-16777215, of overlay networks; unique among the daemon's
        /// networks and the same on every host [default: the lowest free from 256].
        #[arg(long, value_name = "VNI")]
        vni: Option<u32>,
        /// Checksum and segmentation offloads on the network's TAPs.
        #[arg(long, value_enum, default_value = "on")]
        offload: OnOff,
        /// Driver option (repeatable). Keys: mac_aging=SECONDS (MAC table aging time
        /// [default: 300]), nat_udp_timeout=SECONDS (idle UDP NAT flows expire [default: 30]),
        /// port_security=on|off (a sandbox sends only with its own MAC and IPv4 [default: on]),
        /// max_macs_per_port=N (stations one port may own [default: 64]),
        /// nat_udp_flows_per_sandbox=N [default: 256], nat_udp_flows_per_gateway=N
        /// [default: 1024], nat_tcp_flows_per_sandbox=N [default: 128],
        /// nat_tcp_flows_per_gateway=N [default: 512], nat_udp_peers=N (host peers of a
        /// published UDP port [default: 1024]), host_loopback=on|off (the gateway address leads
        /// to the host's loopback [default: off]), host_access=on|off (bridge, root: the host
        /// gets an interface tn-NAME with an address of the network [default: off]),
        /// host_ip=ADDR, host_ip6=ADDR (that interface's addresses [default: the first free]),
        /// icc=true|false (sandboxes reach each other, not only the gateway [default: true]; also
        /// as com.docker.network.bridge.enable_icc=), policy_default=allow|deny (what a flow no
        /// `tapnet policy` rule matches gets [default: allow]), policy_flows=N (bound of the
        /// policy's connection table [default: 16384]). Overlay also: vtep=ADDR[:PORT] (this host's VXLAN
        /// endpoint [default: the daemon's --vtep]), peers=ADDR[:PORT],... (the other hosts'
        /// VTEPs, port 4789 if left out [default: none]).
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List networks.
    Ls {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a network, its endpoints and its live NAT flows.
    Inspect {
        /// Name of the network.
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove a network (it must have no endpoints; bridge, host and none stay).
    Rm {
        /// Name of the network.
        name: String,
    },
    /// Give a running sandbox an interface on a network.
    Connect {
        /// Name of the network.
        network: String,
        /// Name of the sandbox.
        sandbox: String,
        /// Address of the new interface [default: the next free one of the network].
        #[arg(long, value_name = "IP", value_parser = ipv4_address)]
        ip: Option<String>,
        /// IPv6 address of the new interface, on a network made with --ipv6 [default: the
        /// next free one].
        #[arg(long, value_name = "IP6", value_parser = ipv6_address)]
        ip6: Option<String>,
        /// Another name of the sandbox on this network's DNS (repeatable).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
    },
    /// Remove a sandbox's interface on a network.
    Disconnect {
        /// Name of the network.
        network: String,
        /// Name of the sandbox.
        sandbox: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct SandboxSpec {
    /// Network to join (repeatable) [default: bridge].
    #[arg(long = "net", value_name = "NET")]
    pub networks: Vec<String>,
    /// Address on the first network [default: the next free one].
    #[arg(long, value_name = "IP", value_parser = ipv4_address)]
    pub ip: Option<String>,
    /// IPv6 address on the first network, made with --ipv6 [default: the next free one].
    #[arg(long, value_name = "IP6", value_parser = ipv6_address)]
    pub ip6: Option<String>,
    /// Host name inside the sandbox [default: the sandbox's name].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Publish a port (repeatable): [HOSTIP:]HOSTPORT:PORT[/udp]; HOSTIP defaults to every
    /// address, the protocol to tcp.
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = publish_spec)]
    pub publish: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Create a sandbox; prints its ID.
    Create {
        /// Name of the sandbox: 1-64 letters, digits, '-', '_' or '.'.
        name: String,
        #[command(flatten)]
        spec: SandboxSpec,
    },
    /// List sandboxes.
    Ls {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a sandbox: namespaces, interfaces, aliases, published ports.
    Inspect {
        /// Name of the sandbox.
        name: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove a sandbox (refused while processes run inside, unless --force).
    Rm {
        /// Name of the sandbox.
        name: String,
        /// Kill processes still running inside first.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Add a port NAME to network NET, with an address like a sandbox's; a VM joins with
    /// `-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH` (--qemu-socket) or
    /// `-chardev socket,id=c0,path=PATH -netdev vhost-user,id=n0,chardev=c0` (--vhost-user).
    Add {
        /// The network.
        network: String,
        /// Name of the port (also its name in the gateway's DNS).
        name: String,
        /// The unix stream socket the daemon listens on for the VM (must not exist) [default:
        /// none: --vhost-user or --iface is needed then].
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present_any = ["iface", "vhost_user"],
            conflicts_with_all = ["iface", "vhost_user"]
        )]
        qemu_socket: Option<String>,
        /// A unix socket the daemon serves as a vhost-user-net backend for QEMU's `-netdev
        /// vhost-user` (must not exist; the VM needs shared memory: memory-backend-memfd with
        /// share=on) [default: none].
        #[arg(long, value_name = "PATH", conflicts_with = "iface")]
        vhost_user: Option<String>,
        /// An existing interface of the daemon's namespace (a VMM's TAP, a veth end; root):
        /// set up and promiscuous, its addresses untouched; put down again by `port rm` if it
        /// was down [default: none: --qemu-socket is needed then].
        #[arg(long, value_name = "IFNAME")]
        iface: Option<String>,
        /// The VM's MAC [default: 02:42 and its IPv4 address].
        #[arg(long)]
        mac: Option<String>,
        /// Its IPv4 address [default: the next free one].
        #[arg(long)]
        ip: Option<String>,
        /// Its IPv6 address on a dual-stack network [default: the next free one].
        #[arg(long)]
        ip6: Option<String>,
        /// Forward a host port to the VM: [HOSTIP:]HOSTPORT:PORT[/udp] (repeatable), as
        /// `sandbox create -p`.
        #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = publish_spec)]
        publish: Vec<String>,
    },
    /// List ports, of one network or all.
    Ls {
        /// Only this network's [default: every network's].
        network: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove a port (and its socket file).
    Rm {
        /// Name of the port.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name of the sandbox [default: a new adjective_noun name, printed on stderr].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub spec: SandboxSpec,
    /// Remove the sandbox, and whatever still runs in it, when the command ends.
    #[arg(long)]
    pub rm: bool,
    /// The command and its arguments (after `--`); its exit status is tapnet's.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatapathIo {
    Epoll,
    Uring,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TapQueues {
    PerThread,
    Single,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Poll threads for the datapath [default: number of cores].
    #[arg(long, value_name = "N")]
    pub datapath_threads: Option<usize>,
    /// Checksum and segmentation offloads on TAP ports.
    #[arg(long, value_enum, default_value = "on")]
    pub offload: OnOff,
    /// Queues per sandbox TAP: `per-thread` gives each TAP one queue per datapath thread
    /// (IFF_MULTI_QUEUE), each thread polling its own, so a reply comes back to the thread that
    /// forwarded the request and flows spread over the threads; `single` gives one queue,
    /// polled by one thread. Kernels without multi-queue TAPs get `single`.
    #[arg(long, value_enum, default_value = "per-thread")]
    pub tap_queues: TapQueues,
    /// The longest a datapath thread polls without sleeping after forwarding frames (its
    /// epoll set, or its io_uring's completion queue), and a network's gateway after a round
    /// with work, in microseconds; it adapts below that to the gaps between frames, and a
    /// thread that did nothing does not spin. 0: always sleep.
    #[arg(long, value_name = "US", default_value_t = 50)]
    pub poll_spin: u64,
    /// How the datapath does TAP I/O: `uring`, io_uring (multishot reads into shared
    /// buffers, the writes of a round submitted together), or epoll with a warning where the
    /// kernel or a seccomp filter refuses it; `epoll`, one read and one write per frame.
    #[arg(long, value_enum, value_name = "MODE", default_value = "uring")]
    pub datapath_io: DatapathIo,
    /// Let outbound NAT reach only these destinations, IPv4 or IPv6 prefixes (repeatable or
    /// comma-separated) [env: TAPNET_NAT_ALLOW] [default: everywhere]. Connections to a
    /// network's gateway address count as 127.0.0.1, and to its IPv6 gateway as ::1, which is
    /// admitted when 127.0.0.1 is.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub nat_allow: Vec<String>,
    /// Name servers for names the gateways do not know (repeatable or comma-separated), ADDR
    /// or ADDR:PORT [env: TAPNET_DNS_UPSTREAM] [default: those of /etc/resolv.conf].
    #[arg(long, value_name = "ADDR[:PORT]", value_delimiter = ',')]
    pub dns_upstream: Vec<String>,
    /// Let members of GROUP use the control socket too (socket mode 0660), as Docker's
    /// `docker` group does [default: only the daemon's own user].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Serve Prometheus metrics (text format 0.0.4) at http://ADDR:PORT/metrics [env:
    /// TAPNET_METRICS] [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// The VXLAN endpoint of overlay networks, ADDR or ADDR:PORT (port 4789 if left out); a
    /// network's `--opt vtep=` overrides it [default: none: overlay networks must name one].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub vtep: Option<String>,
    /// Keep overlay networks, address claims and endpoints in this cluster store,
    /// etcd://HOST:PORT[,HOST:PORT...]; needs --vtep (its address names this host) and a build
    /// with the `etcd` feature [default: none: static peers only].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// TTL of this daemon's lease in the store, in seconds (`15` or `15s`, 2-3600): a host
    /// dead this long loses its endpoints in the other hosts' tables [default: 15s].
    #[arg(long, value_name = "SECONDS")]
    pub store_lease: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Stop the daemon and remove everything the state dir owns.
    Reset,
    /// Print the committed state as JSON: what state.json holds after a clean stop (the
    /// daemon keeps a snapshot and a journal of the commits since).
    Export,
}

/// A non-empty environment variable.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A list flag's values, or the comma-separated environment variable when the flag is absent.
fn list_or_env(values: Vec<String>, name: &str) -> Vec<String> {
    if !values.is_empty() {
        return values;
    }
    env_value(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `-p`: the mapping's syntax is checked here, so that a malformed one is a usage error
/// (exit status 2); whether the port is free is the daemon's to say.
fn publish_spec(spec: &str) -> std::result::Result<String, String> {
    crate::control::ports::parse(spec, "")
        .map(|_| spec.to_string())
        .map_err(|e| e.to_string())
}

/// The body of the `port_spec` fuzz target, here so that the fuzzer reaches the private
/// parser: on any string `-p`'s parser does not panic, and what it accepts has real ports and at
/// least one host binding.
#[doc(hidden)]
pub fn check_arbitrary_publish_spec(spec: &str) {
    if let Ok(port) = crate::control::ports::parse(spec, "n") {
        assert!(port.host_port > 0 && port.port > 0);
        assert!(!port.bindings().is_empty());
        let _ = port.to_string();
    }
}

/// `--ip`, `--gateway`: an IPv4 address (whether it fits the network is the daemon's to say).
fn ipv4_address(s: &str) -> std::result::Result<String, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

/// `--subnet`, `--ip-range`: an IPv4 prefix in CIDR form.
fn ipv4_subnet(s: &str) -> std::result::Result<String, String> {
    s.parse::<crate::wire::Ipv4Net>().map(|_| s.to_string())
}

/// `--ip6`: an IPv6 address.
fn ipv6_address(s: &str) -> std::result::Result<String, String> {
    s.parse::<std::net::Ipv6Addr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?} is not an IPv6 address"))
}

/// `network create --subnet`: an IPv4 or IPv6 prefix in CIDR form (the family is its own).
fn any_subnet(s: &str) -> std::result::Result<String, String> {
    if s.contains(':') {
        s.parse::<crate::wire::Ipv6Net>().map(|_| s.to_string())
    } else {
        ipv4_subnet(s)
    }
}

/// `network create --gateway`: an IPv4 or IPv6 address.
fn any_address(s: &str) -> std::result::Result<String, String> {
    s.parse::<std::net::IpAddr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?} is not an IPv4 address (nor an IPv6 one)"))
}

/// Split `--subnet` or `--gateway` values by family: at most one of each.
fn by_family(what: &str, values: Vec<String>) -> Result<(Option<String>, Option<String>)> {
    let (v6, v4): (Vec<String>, Vec<String>) = values.into_iter().partition(|v| v.contains(':'));
    if v4.len() > 1 || v6.len() > 1 {
        return Err(Error::Usage(format!(
            "--{what} may be given once per address family (one IPv4, one IPv6)"
        )));
    }
    Ok((v4.into_iter().next(), v6.into_iter().next()))
}

/// Parse arguments, run, and return the process exit status (0 ok, 1 failed, 2 usage).
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Error::StdoutClosed) => 0,
        Err(Error::Usage(message)) => {
            eprintln!("tapnet: error: {message}");
            2
        }
        Err(e) => {
            eprintln!("tapnet: error: {e}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let chosen_dir = cli
        .state_dir
        .clone()
        .or_else(|| env_value(ENV_STATE_DIR).map(PathBuf::from));
    let dirs = StateDir::new(match chosen_dir.clone() {
        Some(dir) => dir,
        None => StateDir::default_root()?,
    });
    let client = Client::new(dirs.clone(), !cli.no_autostart);
    match cli.command {
        Command::Network(cmd) => network(&client, cmd),
        Command::Sandbox(cmd) => sandbox(&client, cmd),
        Command::Port(cmd) => port(&client, cmd),
        Command::Exec { sandbox, command } => {
            let view: SandboxView = client.call(&Request::SandboxInspect { name: sandbox })?;
            let info: InfoView = client.call(&Request::Info)?;
            exec::exec_in(&exec::Entry::new(&view, &info, client.dirs()), &command)
        }
        Command::Info { format } => {
            let info: InfoView = client.call(&Request::Info)?;
            out!("{}", views::info(&info, format.format))?;
            Ok(0)
        }
        Command::Run(args) => run_command(&client, args),
        Command::Fdb { network, format } => {
            let rows: Vec<FdbRow> = client.call(&Request::Fdb { network })?;
            out!("{}", views::fdb(&rows, format.format))?;
            Ok(0)
        }
        Command::Stats { network, format } => {
            let mut rows: Vec<StatsRow> = client.call(&Request::Stats { network })?;
            views::sort_stats(&mut rows);
            out!("{}", views::stats(&rows, format.format))?;
            Ok(0)
        }
        Command::Capture {
            network,
            sandbox,
            write,
            count,
            snaplen,
        } => capture::run(
            &client,
            capture::CaptureArgs {
                network,
                sandbox,
                write,
                count,
                snaplen,
            },
        ),
        Command::Link(cmd) => lab::link(&client, cmd),
        Command::Policy(cmd) => policy::policy(&client, cmd),
        Command::Plugin(PluginCmd::Docker { name, stop }) => {
            let v: serde_json::Value = client.call(&Request::PluginDocker { name, stop })?;
            let socket = v["socket"].as_str().unwrap_or_default();
            if stop {
                outln!("stopped serving {socket}")?;
            } else {
                outln!("serving {socket}")?;
            }
            Ok(0)
        }
        Command::Trace(args) => lab::trace(&client, args),
        Command::Up(args) => crate::topology::apply::up(&client, &args.file, args.dry_run),
        Command::Down(args) => crate::topology::apply::down(&client, &args.file, args.dry_run),
        Command::Daemon(args) => run_daemon(dirs, args),
        Command::System(SystemCmd::Reset) => {
            reset::reset(&client)?;
            Ok(0)
        }
        Command::System(SystemCmd::Export) => {
            let state: serde_json::Value = client.call(&Request::SystemExport)?;
            let text = serde_json::to_string_pretty(&state)
                .map_err(|e| Error::invalid(format!("format the state: {e}")))?;
            outln!("{text}")?;
            Ok(0)
        }
        // The demo always starts a daemon of its own: refuse a flag it could not honour.
        Command::Demo if cli.no_autostart => Err(Error::usage(
            "demo: --no-autostart does not apply: the demo starts its own daemon in its own \
             state dir",
        )),
        Command::Demo => crate::demo::run(chosen_dir),
        Command::Completion { shell } => {
            out!("{}", docs::completion(shell)?)?;
            Ok(0)
        }
        Command::Man { dir: None } => {
            std::io::stdout()
                .write_all(&docs::man_page()?)
                .map_err(|e| output::stdout_error(e, "write the man page to stdout"))?;
            Ok(0)
        }
        Command::Man { dir: Some(dir) } => {
            for path in docs::write_man_pages(&dir)? {
                outln!("{}", path.display())?;
            }
            Ok(0)
        }
        Command::Version => {
            outln!("tapnet {VERSION}")?;
            Ok(0)
        }
    }
}

fn run_daemon(dirs: StateDir, args: DaemonArgs) -> Result<i32> {
    let threads = args
        .datapath_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(Error::usage("--datapath-threads must be at least 1"));
    }
    let offload = match args.offload {
        OnOff::On => Offload::On,
        OnOff::Off => Offload::Off,
    };
    let io = match args.datapath_io {
        DatapathIo::Epoll => IoMode::Epoll,
        DatapathIo::Uring => IoMode::uring().unwrap_or_else(|why| {
            eprintln!(
                "tapnet: io_uring is not available ({why}); datapath I/O falls back to epoll"
            );
            IoMode::Epoll
        }),
    };
    let mut nat_allow = Vec::new();
    let mut nat_allow6 = Vec::new();
    for cidr in list_or_env(args.nat_allow, ENV_NAT_ALLOW) {
        // The family is the address's, as for `--subnet`.
        if cidr.contains(':') {
            let net = cidr
                .parse()
                .map_err(|e: String| Error::usage(format!("--nat-allow: {e}")))?;
            nat_allow6.push(net);
        } else {
            let net = cidr
                .parse()
                .map_err(|e: String| Error::usage(format!("--nat-allow: {e}")))?;
            nat_allow.push(net);
        }
    }
    let dns_upstreams = list_or_env(args.dns_upstream, ENV_DNS_UPSTREAM)
        .iter()
        .map(|a| {
            a.parse::<std::net::SocketAddr>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| Error::usage(format!("--dns-upstream: bad address {a:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let group = args
        .group
        .as_deref()
        .map(|g| {
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid)
                .or_else(|| g.parse().ok().map(nix::unistd::Gid::from_raw))
                .ok_or_else(|| Error::usage(format!("--group: no such group {g:?}")))
        })
        .transpose()?;
    let metrics = args
        .metrics
        .clone()
        .or_else(|| env_value(ENV_METRICS))
        .map(|a| {
            a.parse::<std::net::SocketAddr>().map_err(|_| {
                Error::usage(format!("--metrics: bad address {a:?}: expected ADDR:PORT"))
            })
        })
        .transpose()?;
    let vtep = args
        .vtep
        .as_deref()
        .map(|a| {
            crate::drivers::overlay::parse_vtep_addr(a)
                .map_err(|e| Error::usage(format!("--vtep: {e}")))
        })
        .transpose()?;
    let store = args
        .store
        .as_deref()
        .map(|url| {
            let endpoints = crate::cluster::parse_url(url)
                .map_err(|e| Error::usage(format!("--store: {e}")))?;
            let lease = match args.store_lease.as_deref() {
                Some(l) => crate::cluster::parse_lease(l)
                    .map_err(|e| Error::usage(format!("--store-lease: {e}")))?,
                None => crate::cluster::DEFAULT_LEASE,
            };
            if vtep.is_none() {
                return Err(Error::usage(
                    "--store needs --vtep: its address names this host in the store",
                ));
            }
            Ok(crate::cluster::StoreOptions { endpoints, lease })
        })
        .transpose()?;
    daemon::run(
        dirs,
        DaemonOptions {
            vtep,
            store,
            datapath: crate::datapath::Options {
                threads,
                multiqueue: args.tap_queues == TapQueues::PerThread,
                spin: std::time::Duration::from_micros(args.poll_spin),
                io,
            },
            offload,
            nat_allow,
            nat_allow6,
            dns_upstreams,
            group,
            metrics,
        },
    )?;
    Ok(0)
}

fn network(client: &Client, cmd: NetworkCmd) -> Result<i32> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            mtu,
            vni,
            offload,
            options,
            ipv6,
            no_ipv4,
        } => {
            let (subnet, subnet6) = by_family("subnet", subnet)?;
            let (gateway, gateway6) = by_family("gateway", gateway)?;
            let view: NetworkView = client.call(&Request::NetworkCreate(NetworkCreate {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                ip_range,
                internal,
                mtu,
                vni,
                offload: Some(offload == OnOff::On),
                options,
                ipv6,
                no_ipv4,
                subnet6,
                gateway6,
            }))?;
            outln!("{}", view.id)?;
        }
        NetworkCmd::Ls { format } => {
            let list: Vec<NetworkView> = client.call(&Request::NetworkList)?;
            out!("{}", views::network_list(&list, format.format))?;
        }
        NetworkCmd::Inspect { name, format } => {
            let view: NetworkView = client.call(&Request::NetworkInspect { name })?;
            out!("{}", views::network(&view, format.format))?;
        }
        NetworkCmd::Rm { name } => {
            client.call_value(&Request::NetworkRemove { name: name.clone() })?;
            outln!("{name}")?;
        }
        NetworkCmd::Connect {
            network,
            sandbox,
            ip,
            ip6,
            aliases,
        } => {
            client.call_value(&Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
                ip6,
            })?;
        }
        NetworkCmd::Disconnect { network, sandbox } => {
            client.call_value(&Request::NetworkDisconnect { network, sandbox })?;
        }
    }
    Ok(0)
}

fn sandbox_request(name: String, spec: SandboxSpec) -> Request {
    Request::SandboxCreate(SandboxCreate {
        name,
        networks: spec.networks,
        ip: spec.ip,
        hostname: spec.hostname,
        publish: spec.publish,
        ip6: spec.ip6,
    })
}

fn sandbox(client: &Client, cmd: SandboxCmd) -> Result<i32> {
    match cmd {
        SandboxCmd::Create { name, spec } => {
            let view: SandboxView = client.call(&sandbox_request(name, spec))?;
            outln!("{}", view.id)?;
        }
        SandboxCmd::Ls { format } => {
            let list: Vec<SandboxView> = client.call(&Request::SandboxList)?;
            out!("{}", views::sandbox_list(&list, format.format))?;
        }
        SandboxCmd::Inspect { name, format } => {
            let view: SandboxView = client.call(&Request::SandboxInspect { name })?;
            out!("{}", views::sandbox(&view, format.format))?;
        }
        SandboxCmd::Rm { name, force } => {
            client.call_value(&Request::SandboxRemove {
                name: name.clone(),
                force,
            })?;
            outln!("{name}")?;
        }
    }
    Ok(0)
}

fn port(client: &Client, cmd: PortCmd) -> Result<i32> {
    match cmd {
        PortCmd::Add {
            network,
            name,
            qemu_socket,
            vhost_user,
            iface,
            mac,
            ip,
            ip6,
            publish,
        } => {
            // The daemon may run elsewhere in the file system's view: send an absolute path.
            let absolute = |flag: &str, s: Option<String>| {
                s.map(|s| {
                    std::path::absolute(&s)
                        .map(|p| p.display().to_string())
                        .map_err(|e| Error::usage(format!("{flag} {s}: {e}")))
                })
                .transpose()
            };
            let qemu_socket = absolute("--qemu-socket", qemu_socket)?;
            let vhost_user = absolute("--vhost-user", vhost_user)?;
            let view: PortView = client.call(&Request::PortAdd(PortAdd {
                network,
                name,
                qemu_socket,
                vhost_user,
                iface,
                mac,
                ip,
                ip6,
                publish,
            }))?;
            outln!("{}", view.name)?;
        }
        PortCmd::Ls { network, format } => {
            let list: Vec<PortView> = client.call(&Request::PortList { network })?;
            out!("{}", views::port_list(&list, format.format))?;
        }
        PortCmd::Rm { name } => {
            client.call_value(&Request::PortRemove { name: name.clone() })?;
            outln!("{name}")?;
        }
    }
    Ok(0)
}

/// Attempts at a generated name before giving up: each one only fails when another client
/// created a sandbox of that name between our list and our create.
const NAME_ATTEMPTS: usize = 8;

fn run_command(client: &Client, args: RunArgs) -> Result<i32> {
    let view: SandboxView = match args.name {
        Some(name) => client.call(&sandbox_request(name, args.spec))?,
        None => create_named_sandbox(client, &args.spec)?,
    };
    let name = view.name.clone();
    let info: InfoView = client.call(&Request::Info)?;
    let status = exec::exec_in(
        &exec::Entry::new(&view, &info, client.dirs()),
        &args.command,
    );
    if args.rm {
        // Like `docker run --rm`: whatever the command left running goes with the sandbox.
        client.call_value(&Request::SandboxRemove { name, force: true })?;
    }
    status
}

/// A sandbox with a generated Docker-style name (adjective_noun) that no sandbox has; the name
/// goes to stderr, so that stdout stays the command's.
fn create_named_sandbox(client: &Client, spec: &SandboxSpec) -> Result<SandboxView> {
    let mut last_error = None;
    for _ in 0..NAME_ATTEMPTS {
        let existing: Vec<SandboxView> = client.call(&Request::SandboxList)?;
        let taken: Vec<&str> = existing.iter().map(|s| s.name.as_str()).collect();
        let name = names::unique_name(&taken, names::random_u64);
        match client.call::<SandboxView>(&sandbox_request(name.clone(), spec.clone())) {
            Ok(view) => {
                eprintln!("tapnet: sandbox {name}");
                return Ok(view);
            }
            // Someone took the name in between: pick another.
            Err(e) if client.call_value(&Request::SandboxInspect { name }).is_ok() => {
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::invalid("could not pick a free sandbox name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand, with its path from the top (`tapnet network create`), except clap's
    /// own `help` subcommands.
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            out.push((sub_path.clone(), sub.clone()));
            walk(sub, sub_path, out);
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_of_every_command_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut commands = vec![("tapnet".to_string(), cmd.clone())];
        walk(&cmd, "tapnet".into(), &mut commands);
        assert!(commands.len() >= 25, "{} commands", commands.len());
        let mut missing = Vec::new();
        for (path, cmd) in &commands {
            if cmd.get_about().is_none() && cmd.get_name() != "tapnet" {
                missing.push(format!("{path} (the command itself)"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path}: {id}"));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    /// An option that takes a value and may be left out says what happens then: a clap
    /// default, or `[default: ...]` in its help. Repeatable options default to none.
    #[test]
    fn every_optional_value_says_its_default() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut commands = vec![("tapnet".to_string(), cmd.clone())];
        walk(&cmd, "tapnet".into(), &mut commands);
        let mut missing = Vec::new();
        for (path, cmd) in &commands {
            for arg in cmd.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let optional_value = arg.get_action().takes_values()
                    && !arg.is_required_set()
                    && !matches!(arg.get_action(), clap::ArgAction::Append);
                if optional_value
                    && arg.get_default_values().is_empty()
                    && !help.contains("[default: ")
                {
                    missing.push(format!("{path}: {}", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no default documented: {missing:#?}");
    }

    /// clap prints `[default: X]` after the help of an argument with a default value: a help
    /// text that says it again shows it twice (`[default: tapnet] [default: tapnet]`).
    #[test]
    fn no_default_is_shown_twice() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut commands = vec![("tapnet".to_string(), cmd.clone())];
        walk(&cmd, "tapnet".into(), &mut commands);
        let mut twice = Vec::new();
        for (path, cmd) in &commands {
            for arg in cmd.get_arguments() {
                let help = arg.get_long_help().or(arg.get_help());
                let help = help.map(|h| h.to_string()).unwrap_or_default();
                let shown_by_clap = arg.get_action().takes_values()
                    && !arg.get_default_values().is_empty()
                    && !arg.is_hide_default_value_set();
                if shown_by_clap && help.contains("[default:") {
                    twice.push(format!("{path}: {}", arg.get_id()));
                }
            }
            let rendered = cmd.clone().render_long_help().to_string();
            for line in rendered.lines() {
                let defaults: Vec<&str> = line.split("[default:").skip(1).collect();
                let mut seen = std::collections::HashSet::new();
                if defaults.iter().any(|d| !seen.insert(d.split(']').next())) {
                    twice.push(format!("{path}: {}", line.trim()));
                }
            }
        }
        assert!(twice.is_empty(), "default shown twice: {twice:#?}");
    }

    #[test]
    fn global_options_come_under_their_own_heading() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut commands = Vec::new();
        walk(&cmd, "tapnet".into(), &mut commands);
        for (path, cmd) in commands.iter().filter(|(_, c)| !c.has_subcommands()) {
            for id in ["state_dir", "no_autostart"] {
                let arg = cmd
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .unwrap_or_else(|| panic!("{path} lacks {id}"));
                assert_eq!(arg.get_help_heading(), Some(GLOBAL_OPTIONS), "{path} {id}");
            }
            // A command's own options stay under "Options", before the global ones.
            let help = cmd.clone().render_help().to_string();
            let global = help.find("Global options:").unwrap_or(0);
            let own = help.find("Options:").unwrap_or(usize::MAX);
            assert!(own < global, "{path}:\n{help}");
        }
    }

    #[test]
    fn option_help_lists_every_key_the_daemon_accepts() {
        let cmd = Cli::command();
        let create = cmd
            .find_subcommand("network")
            .and_then(|n| n.find_subcommand("create"))
            .expect("network create");
        let opt = create
            .get_arguments()
            .find(|a| a.get_id() == "options")
            .expect("--opt");
        let help = opt.get_help().map(|h| h.to_string()).unwrap_or_default();
        for key in [
            "mac_aging=SECONDS",
            "nat_udp_timeout=SECONDS",
            "port_security=on|off",
            "max_macs_per_port=N",
            "nat_udp_flows_per_sandbox=N",
            "nat_udp_flows_per_gateway=N",
            "nat_tcp_flows_per_sandbox=N",
            "nat_tcp_flows_per_gateway=N",
            "nat_udp_peers=N",
            "host_loopback=on|off",
            "host_access=on|off",
            "vtep=ADDR[:PORT]",
            "peers=ADDR[:PORT],...",
        ] {
            assert!(help.contains(key), "{key} missing from: {help}");
        }
        // Every key a driver accepts is documented.
        for key in crate::drivers::overlay::keys() {
            assert!(
                help.contains(&format!("{key}=")),
                "{key} missing from: {help}"
            );
        }
    }

    #[test]
    fn env_fills_absent_lists_and_flags_win() {
        // A variable name of this test only: tests of other modules run in parallel.
        let var = "TAPNET_TEST_LIST_OR_ENV";
        // SAFETY: no other thread reads or writes this variable.
        unsafe { std::env::set_var(var, "10.0.0.0/8, 127.0.0.0/8,") };
        assert_eq!(list_or_env(Vec::new(), var), ["10.0.0.0/8", "127.0.0.0/8"]);
        assert_eq!(list_or_env(vec!["1.2.3.4/32".into()], var), ["1.2.3.4/32"]);
        // SAFETY: as above.
        unsafe { std::env::remove_var(var) };
        assert!(list_or_env(Vec::new(), var).is_empty());
    }
}
