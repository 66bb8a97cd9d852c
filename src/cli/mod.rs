//! The command line: clap definitions and dispatch to the client or the daemon.

pub mod capture;
pub mod exec;
pub mod lab;
pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::client::Client;
use crate::api::types::{
    FdbRow, NetworkCreate, NetworkView, Request, SandboxCreate, SandboxView, StatsRow,
};
use crate::control::reset;
use crate::daemon::{self, DaemonOptions};
use crate::error::{Error, Result};
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use output::{Format, json, opt, table};

#[derive(Parser, Debug)]
#[command(
    name = "tapnet",
    version,
    about = "Userspace virtual switch for containers: Docker's CNM over TAP devices"
)]
pub struct Cli {
    /// State dir of the daemon to talk to (default: /run/tapnet for root,
    /// $XDG_RUNTIME_DIR/tapnet otherwise).
    #[arg(long, global = true, env = "TAPNET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not start a daemon when none answers.
    #[arg(long, global = true)]
    pub no_autostart: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces with endpoints).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Run a command inside a sandbox.
    Exec {
        sandbox: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Create a sandbox, run a command in it, and optionally remove it.
    Run(RunArgs),
    /// Show a network's MAC table.
    Fdb {
        network: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show per-port counters.
    Stats {
        network: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Capture a network's frames (pcap, LINKTYPE_ETHERNET), segmented as on a wire.
    Capture {
        network: String,
        /// Only frames from or to this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
        /// Write pcap to FILE (`-` for stdout) instead of printing a line per frame.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<String>,
        /// Stop after COUNT frames.
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
        /// Bytes kept of each frame.
        #[arg(short = 's', long, value_name = "BYTES")]
        snaplen: Option<u32>,
    },
    /// Impair links (delay, loss, rate, down, ...) and block traffic between sandboxes.
    #[command(subcommand)]
    Link(lab::LinkCmd),
    /// Explain what the switch would do with a frame, step by step, without sending it; or
    /// (--live) show real frames with the decision taken.
    Trace(lab::TraceArgs),
    /// Build (or update) what a topology file describes; twice changes nothing.
    Up(lab::TopologyArgs),
    /// Remove exactly what `up` of a topology file made.
    Down(lab::TopologyArgs),
    /// Run the switch and the control API in the foreground.
    Daemon(DaemonArgs),
    /// Whole-state-dir operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// Build the seed topology in a throwaway state dir, send traffic, show the result.
    Demo,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(long, default_value = "bridge")]
        driver: String,
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        #[arg(long, value_name = "CIDR")]
        ip_range: Option<String>,
        /// No way out of the network (no default route, no NAT).
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        mtu: Option<u32>,
        #[arg(long)]
        vni: Option<u32>,
        /// Checksum and segmentation offloads on the network's TAPs.
        #[arg(long, value_enum, default_value = "on")]
        offload: OnOff,
        /// Driver options; `mac_aging=SECONDS` sets the MAC table's aging time.
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a network and its endpoints.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a network (it must have no endpoints).
    Rm { name: String },
    /// Give a running sandbox an interface on a network.
    Connect {
        network: String,
        sandbox: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Remove a sandbox's interface on a network.
    Disconnect { network: String, sandbox: String },
}

#[derive(Args, Debug, Clone)]
pub struct SandboxSpec {
    /// Network to join (repeatable; default: bridge).
    #[arg(long = "net", value_name = "NET")]
    pub networks: Vec<String>,
    /// Address on the first network.
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Publish a port: [HOSTIP:]HOSTPORT:PORT[/udp].
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Create a sandbox.
    Create {
        name: String,
        #[command(flatten)]
        spec: SandboxSpec,
    },
    /// List sandboxes.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a sandbox.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a sandbox.
    Rm {
        name: String,
        /// Kill processes still running inside first.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub spec: SandboxSpec,
    /// Remove the sandbox when the command ends.
    #[arg(long)]
    pub rm: bool,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Poll threads for the datapath (default: number of cores).
    #[arg(long)]
    pub datapath_threads: Option<usize>,
    /// Checksum and segmentation offloads on TAP ports.
    #[arg(long, value_enum, default_value = "on")]
    pub offload: OnOff,
    /// Let outbound NAT reach only these destinations (repeatable; default: everywhere).
    /// Connections to a network's gateway address count as 127.0.0.1.
    #[arg(
        long,
        value_name = "CIDR",
        env = "TAPNET_NAT_ALLOW",
        value_delimiter = ','
    )]
    pub nat_allow: Vec<String>,
    /// Name servers for names the gateways do not know (repeatable; default: those of
    /// /etc/resolv.conf). ADDR or ADDR:PORT.
    #[arg(
        long,
        value_name = "ADDR[:PORT]",
        env = "TAPNET_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    pub dns_upstream: Vec<String>,
    /// Serve Prometheus metrics (text format 0.0.4) at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT", env = "TAPNET_METRICS")]
    pub metrics: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Stop the daemon and remove everything the state dir owns.
    Reset,
}

/// Parse arguments, run, and return the process exit status (0 ok, 1 failed, 2 usage).
pub fn main() -> i32 {
    let cli = Cli::parse();
    let dirs = StateDir::new(cli.state_dir.clone().unwrap_or_else(StateDir::default_root));
    match run(cli, dirs) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapnet: error: {e}");
            1
        }
    }
}

fn run(cli: Cli, dirs: StateDir) -> Result<i32> {
    let client = Client::new(dirs.clone(), !cli.no_autostart);
    match cli.command {
        Command::Network(cmd) => network(&client, cmd),
        Command::Sandbox(cmd) => sandbox(&client, cmd),
        Command::Exec { sandbox, command } => {
            let view: SandboxView = client.call(&Request::SandboxInspect { name: sandbox })?;
            exec::exec_in(&view, &command)
        }
        Command::Run(args) => run_command(&client, args),
        Command::Fdb { network, format } => {
            let rows: Vec<FdbRow> = client.call(&Request::Fdb { network })?;
            print_fdb(&rows, format);
            Ok(0)
        }
        Command::Stats { network, format } => {
            let rows: Vec<StatsRow> = client.call(&Request::Stats { network })?;
            print_stats(&rows, format);
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
        Command::Trace(args) => lab::trace(&client, args),
        Command::Up(args) => crate::topology::apply::up(&client, &args.file, args.dry_run),
        Command::Down(args) => crate::topology::apply::down(&client, &args.file, args.dry_run),
        Command::Daemon(args) => {
            let threads = args
                .datapath_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if threads == 0 {
                return Err(Error::invalid("--datapath-threads must be at least 1"));
            }
            let offload = match args.offload {
                OnOff::On => Offload::On,
                OnOff::Off => Offload::Off,
            };
            let nat_allow = args
                .nat_allow
                .iter()
                .map(|c| {
                    c.parse()
                        .map_err(|e: String| Error::invalid(format!("--nat-allow: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let dns_upstreams = args
                .dns_upstream
                .iter()
                .map(|a| {
                    a.parse::<std::net::SocketAddr>()
                        .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                        .map_err(|_| Error::invalid(format!("--dns-upstream: bad address {a:?}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let metrics = args
                .metrics
                .as_deref()
                .map(|a| {
                    a.parse::<std::net::SocketAddr>().map_err(|_| {
                        Error::invalid(format!("--metrics: bad address {a:?}: expected ADDR:PORT"))
                    })
                })
                .transpose()?;
            daemon::run(
                dirs,
                DaemonOptions {
                    threads,
                    offload,
                    nat_allow,
                    dns_upstreams,
                    metrics,
                },
            )?;
            Ok(0)
        }
        Command::System(SystemCmd::Reset) => {
            reset::reset(&client)?;
            Ok(0)
        }
        Command::Demo => crate::demo::run(),
    }
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
        } => {
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
            }))?;
            println!("{}", view.id);
        }
        NetworkCmd::Ls { format } => {
            let views: Vec<NetworkView> = client.call(&Request::NetworkList)?;
            match format {
                Format::Json => print!("{}", json(&views)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = views
                        .iter()
                        .map(|n| {
                            vec![
                                n.id.chars().take(12).collect(),
                                n.name.clone(),
                                n.driver.clone(),
                                opt(&n.subnet),
                                opt(&n.gateway),
                                n.endpoints.len().to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "NETWORK ID",
                                "NAME",
                                "DRIVER",
                                "SUBNET",
                                "GATEWAY",
                                "ENDPOINTS"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        NetworkCmd::Inspect { name, format } => {
            let view: NetworkView = client.call(&Request::NetworkInspect { name })?;
            match format {
                Format::Json => print!("{}", json(&view)),
                Format::Table => print_network(&view),
            }
        }
        NetworkCmd::Rm { name } => {
            client.call_value(&Request::NetworkRemove { name: name.clone() })?;
            println!("{name}");
        }
        NetworkCmd::Connect {
            network,
            sandbox,
            ip,
            aliases,
        } => {
            client.call_value(&Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
            })?;
        }
        NetworkCmd::Disconnect { network, sandbox } => {
            client.call_value(&Request::NetworkDisconnect { network, sandbox })?;
        }
    }
    Ok(0)
}

fn print_network(n: &NetworkView) {
    println!("Name:      {}", n.name);
    println!("ID:        {}", n.id);
    println!("Driver:    {}", n.driver);
    println!("Subnet:    {}", opt(&n.subnet));
    println!("Gateway:   {}", opt(&n.gateway));
    println!("IP range:  {}", opt(&n.ip_range));
    println!("Internal:  {}", n.internal);
    println!("MTU:       {}", n.mtu);
    println!("MAC aging: {} s", n.mac_aging_s);
    println!("Offloads:  {}", if n.offload { "on" } else { "off" });
    for (k, v) in &n.options {
        println!("Option:    {k}={v}");
    }
    let rows: Vec<Vec<String>> = n
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.sandbox.clone(),
                opt(&e.interface),
                opt(&e.mac),
                opt(&e.ipv4),
            ]
        })
        .collect();
    println!();
    print!("{}", table(&["SANDBOX", "INTERFACE", "MAC", "IPV4"], &rows));
}

fn sandbox_request(name: String, spec: SandboxSpec) -> Request {
    Request::SandboxCreate(SandboxCreate {
        name,
        networks: spec.networks,
        ip: spec.ip,
        hostname: spec.hostname,
        publish: spec.publish,
    })
}

fn sandbox(client: &Client, cmd: SandboxCmd) -> Result<i32> {
    match cmd {
        SandboxCmd::Create { name, spec } => {
            let view: SandboxView = client.call(&sandbox_request(name, spec))?;
            println!("{}", view.id);
        }
        SandboxCmd::Ls { format } => {
            let views: Vec<SandboxView> = client.call(&Request::SandboxList)?;
            match format {
                Format::Json => print!("{}", json(&views)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = views
                        .iter()
                        .map(|s| {
                            let addrs: Vec<String> = s
                                .interfaces
                                .iter()
                                .map(|i| match &i.ipv4 {
                                    Some(ip) => format!("{}={ip}", i.network),
                                    None => i.network.clone(),
                                })
                                .collect();
                            vec![
                                s.name.clone(),
                                s.id.chars().take(12).collect(),
                                s.hostname.clone(),
                                addrs.join(","),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["NAME", "SANDBOX ID", "HOSTNAME", "NETWORKS"], &rows)
                    );
                }
            }
        }
        SandboxCmd::Inspect { name, format } => {
            let view: SandboxView = client.call(&Request::SandboxInspect { name })?;
            match format {
                Format::Json => print!("{}", json(&view)),
                Format::Table => print_sandbox(&view),
            }
        }
        SandboxCmd::Rm { name, force } => {
            client.call_value(&Request::SandboxRemove {
                name: name.clone(),
                force,
            })?;
            println!("{name}");
        }
    }
    Ok(0)
}

fn print_sandbox(s: &SandboxView) {
    println!("Name:      {}", s.name);
    println!("ID:        {}", s.id);
    println!("Hostname:  {}", s.hostname);
    println!("Netns:     {}", s.netns);
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.network.clone(),
                opt(&i.interface),
                opt(&i.mac),
                opt(&i.ipv4),
            ]
        })
        .collect();
    println!();
    print!("{}", table(&["NETWORK", "INTERFACE", "MAC", "IPV4"], &rows));
    lab::print_sandbox_links(s);
}

fn run_command(client: &Client, args: RunArgs) -> Result<i32> {
    let name = args.name.unwrap_or_else(|| {
        let id = crate::control::model::new_id();
        format!("run-{}", &id[..12])
    });
    let view: SandboxView = client.call(&sandbox_request(name.clone(), args.spec))?;
    let status = exec::exec_in(&view, &args.command);
    if args.rm {
        // Like `docker run --rm`: whatever the command left running goes with the sandbox.
        client.call_value(&Request::SandboxRemove { name, force: true })?;
    }
    status
}

fn print_fdb(rows: &[FdbRow], format: Format) {
    match format {
        Format::Json => print!("{}", json(&rows)),
        Format::Table => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.mac.clone(),
                        r.port.clone(),
                        r.age_s.to_string(),
                        r.kind.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&["MAC", "PORT", "AGE", "KIND"], &rows));
        }
    }
}

fn print_stats(rows: &[StatsRow], format: Format) {
    match format {
        Format::Json => print!("{}", json(&rows)),
        Format::Table => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.network.clone(),
                        r.port.clone(),
                        r.rx_packets.to_string(),
                        r.rx_bytes.to_string(),
                        r.tx_packets.to_string(),
                        r.tx_bytes.to_string(),
                        r.drops.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NETWORK", "PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS"
                    ],
                    &rows
                )
            );
        }
    }
}
