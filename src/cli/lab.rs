//! The lab commands: `tapnet link` (impairments and blocks) and `tapnet trace`.

use std::io::BufRead;
use std::net::IpAddr;

use clap::{Args, Subcommand};

use super::output::{Format, json, table};
use crate::api::client::Client;
use crate::api::lab::{LinkChange, LinkRow, TraceReport, TraceRequest};
use crate::api::live::LiveLine;
use crate::api::types::Request;
use crate::datapath::impair::{parse_duration, parse_percent, parse_rate};
use crate::error::{Context, Error, Result};
use crate::wire::MacAddr;

#[derive(Subcommand, Debug)]
pub enum LinkCmd {
    /// Impair the link between a sandbox and a network's switch (frames towards the sandbox;
    /// `--both` also frames from it). Options not given keep their value; 0 turns one off.
    Set(LinkSetArgs),
    /// Show impaired and blocked links.
    Show {
        /// Only this network's links [default: every network].
        network: Option<String>,
        /// Output format: aligned table for people, one JSON document for scripts.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove impairments and blocks (all, or a sandbox's, or a network's).
    Reset {
        /// Only this sandbox's links [default: every sandbox].
        sandbox: Option<String>,
        /// Only links on this network [default: every network].
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
    /// Drop every frame between two sandboxes or VM ports (both ways) on NET or every network
    /// they share.
    Block {
        /// One sandbox or VM port.
        a: String,
        /// The other sandbox or VM port.
        b: String,
        /// Only on this network [default: every network both are on].
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
    /// Undo `link block`.
    Unblock {
        /// One sandbox or VM port.
        a: String,
        /// The other sandbox or VM port.
        b: String,
        /// Only on this network [default: every network both are on].
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct LinkSetArgs {
    /// The sandbox (or VM port, `tapnet port add`) whose link to change.
    pub sandbox: String,
    /// The network the link joins it to.
    pub network: String,
    /// Added latency, e.g. 20ms [default: unchanged; none at first].
    #[arg(long, value_name = "D")]
    pub delay: Option<String>,
    /// Latency varies uniformly by up to this much either way (at most --delay) [default:
    /// unchanged; none at first].
    #[arg(long, value_name = "D")]
    pub jitter: Option<String>,
    /// Frames dropped at random, e.g. 10% [default: unchanged; none at first].
    #[arg(long, value_name = "P%")]
    pub loss: Option<String>,
    /// Frames sent twice [default: unchanged; none at first].
    #[arg(long, value_name = "P%")]
    pub duplicate: Option<String>,
    /// Frames with one bit of their payload flipped [default: unchanged; none at first].
    #[arg(long, value_name = "P%")]
    pub corrupt: Option<String>,
    /// Frames that skip the delay and overtake the others [default: unchanged; none at first].
    #[arg(long, value_name = "P%")]
    pub reorder: Option<String>,
    /// Bandwidth limit (token bucket with a 100 ms queue), e.g. 10mbit [default: unchanged;
    /// unlimited at first].
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// Take the link down: every frame is dropped.
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    /// Bring a downed link up again.
    #[arg(long)]
    pub up: bool,
    /// Seed of the random draws: the same seed drops the same frames [default: a fresh one].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Impair frames from the sandbox into the switch too.
    #[arg(long)]
    pub both: bool,
}

fn opt<T>(
    v: &Option<String>,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    v.as_deref()
        .map(|s| parse(s).map_err(Error::usage))
        .transpose()
}

/// The request `link set` sends; bad values fail here with one line and send nothing.
pub fn link_change(a: &LinkSetArgs) -> Result<LinkChange> {
    Ok(LinkChange {
        sandbox: a.sandbox.clone(),
        network: a.network.clone(),
        delay_us: opt(&a.delay, parse_duration)?,
        jitter_us: opt(&a.jitter, parse_duration)?,
        loss_ppm: opt(&a.loss, parse_percent)?,
        duplicate_ppm: opt(&a.duplicate, parse_percent)?,
        corrupt_ppm: opt(&a.corrupt, parse_percent)?,
        reorder_ppm: opt(&a.reorder, parse_percent)?,
        rate_bps: opt(&a.rate, parse_rate)?,
        down: if a.down {
            Some(true)
        } else if a.up {
            Some(false)
        } else {
            None
        },
        seed: a.seed,
        both: a.both.then_some(true),
    })
}

pub fn link(client: &Client, cmd: LinkCmd) -> Result<i32> {
    match cmd {
        LinkCmd::Set(args) => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkSet(link_change(&args)?))?;
            print_links(&rows, Format::Table)?;
        }
        LinkCmd::Show { network, format } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkShow { network })?;
            print_links(&rows, format)?;
        }
        LinkCmd::Reset { sandbox, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkReset { network, sandbox })?;
            print_links(&rows, Format::Table)?;
        }
        LinkCmd::Block { a, b, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkBlock {
                a,
                b,
                network,
                block: true,
            })?;
            print_links(&rows, Format::Table)?;
        }
        LinkCmd::Unblock { a, b, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkBlock {
                a,
                b,
                network,
                block: false,
            })?;
            print_links(&rows, Format::Table)?;
        }
    }
    Ok(0)
}

pub fn print_links(rows: &[LinkRow], format: Format) -> Result<()> {
    match format {
        Format::Json => out!("{}", json(&rows))?,
        Format::Table => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let drops = r.stats.as_ref().map_or("-".to_string(), |s| {
                        (s.dropped_down
                            + s.dropped_loss
                            + s.dropped_queue
                            + s.dropped_blocked
                            + s.dropped_overflow)
                            .to_string()
                    });
                    vec![
                        r.network.clone(),
                        r.sandbox.clone(),
                        r.interface.clone(),
                        r.summary.clone(),
                        if r.blocked.is_empty() {
                            "-".into()
                        } else {
                            r.blocked.join(",")
                        },
                        drops,
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "NETWORK",
                        "SANDBOX",
                        "INTERFACE",
                        "IMPAIRMENTS",
                        "BLOCKED",
                        "DROPS"
                    ],
                    &rows
                )
            )?;
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TopologyArgs {
    /// A TOML topology file (see examples/).
    pub file: std::path::PathBuf,
    /// Print the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The network the frame enters.
    pub network: String,
    /// The sandbox the frame comes from (required unless --live, where it filters) [default:
    /// with --live, every sandbox].
    #[arg(long = "in", value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// Source MAC [default: the sandbox's].
    #[arg(long, value_name = "MAC", value_parser = mac_syntax)]
    pub src: Option<String>,
    /// Destination MAC, IPv4 or IPv6 address (required unless --live, where it filters)
    /// [default: with --live, every destination].
    #[arg(long, value_name = "MAC|IP", value_parser = mac_or_ip_syntax)]
    pub dst: Option<String>,
    /// The protocol of the frame; icmp is ICMPv6 for an IPv6 --dst [default: tcp with --dport,
    /// else icmp echo].
    #[arg(long, value_name = "tcp|udp|icmp")]
    pub proto: Option<String>,
    /// TCP or UDP destination port [default: none].
    #[arg(long, value_name = "N")]
    pub dport: Option<u16>,
    /// Show real frames as the switch handles them, one line each, instead of explaining one.
    #[arg(long)]
    pub live: bool,
    /// With --live: stop after COUNT frames.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 10)]
    pub count: u64,
    /// With --live: give up after SECONDS without a matching frame [default: wait for ever].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Output format: aligned table for people, one JSON document for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `--src`: a MAC address, checked before anything is sent (a usage error otherwise).
fn mac_syntax(s: &str) -> std::result::Result<String, String> {
    s.parse::<MacAddr>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// `--dst`: a MAC, an IPv4 or an IPv6 address.
fn mac_or_ip_syntax(s: &str) -> std::result::Result<String, String> {
    if s.parse::<MacAddr>().is_ok() || s.parse::<IpAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: expected a MAC, an IPv4 or an IPv6 address"))
    }
}

pub fn trace(client: &Client, args: TraceArgs) -> Result<i32> {
    if args.live {
        return trace_live(client, args);
    }
    let (Some(sandbox), Some(dst)) = (args.sandbox.clone(), args.dst.clone()) else {
        return Err(Error::usage(
            "trace needs --in SANDBOX and --dst MAC|IP (or --live)",
        ));
    };
    let report: TraceReport = client.call(&Request::Trace(TraceRequest {
        network: args.network,
        sandbox,
        src: args.src,
        dst,
        proto: args.proto,
        dport: args.dport,
    }))?;
    match args.format {
        Format::Json => out!("{}", json(&report))?,
        Format::Table => {
            for (i, step) in report.steps.iter().enumerate() {
                outln!("{:>2}. {step}", i + 1)?;
            }
            let outs: Vec<String> = report
                .outputs
                .iter()
                .map(|o| {
                    if o.dropped {
                        format!("{} (dropped by its link)", o.port)
                    } else {
                        o.port.clone()
                    }
                })
                .collect();
            outln!(
                "Decision: {}{}",
                report.decision,
                if outs.is_empty() {
                    String::new()
                } else {
                    format!(" -> {}", outs.join(", "))
                }
            )?;
        }
    }
    Ok(0)
}

/// Client-side filters of `trace --live`: checked before asking the daemon anything.
struct LiveFilter {
    mac: Option<MacAddr>,
    ip: Option<IpAddr>,
    src_mac: Option<MacAddr>,
    proto: Option<String>,
    dport: Option<u16>,
}

impl LiveFilter {
    fn new(args: &TraceArgs) -> Result<Self> {
        let (mut mac, mut ip) = (None, None);
        if let Some(d) = &args.dst {
            if let Ok(m) = d.parse::<MacAddr>() {
                mac = Some(m);
            } else {
                ip = Some(d.parse::<IpAddr>().map_err(|_| {
                    Error::usage(format!(
                        "--dst {d:?}: expected a MAC, an IPv4 or an IPv6 address"
                    ))
                })?);
            }
        }
        let src_mac = args
            .src
            .as_deref()
            .map(|s| {
                s.parse::<MacAddr>()
                    .map_err(|e| Error::usage(format!("--src: {e}")))
            })
            .transpose()?;
        let v6 = matches!(ip, Some(IpAddr::V6(_)));
        let proto = args
            .proto
            .as_deref()
            .map(|p| crate::datapath::trace::Proto::parse(p).map(|p| live_proto(p, v6)))
            .transpose()
            .map_err(Error::Invalid)?;
        Ok(LiveFilter {
            mac,
            ip,
            src_mac,
            proto,
            dport: args.dport,
        })
    }

    fn wants(&self, l: &LiveLine) -> bool {
        let f = &l.frame;
        self.mac.is_none_or(|m| f.dst == m.to_string())
            && self.ip.is_none_or(|ip| match ip {
                IpAddr::V4(ip) => f.dst_ip == Some(ip),
                IpAddr::V6(ip) => f.dst_ip6 == Some(ip),
            })
            && self.src_mac.is_none_or(|m| f.src == m.to_string())
            && self
                .proto
                .as_ref()
                .is_none_or(|p| f.proto.as_ref() == Some(p))
            && self.dport.is_none_or(|p| f.dport == Some(p))
    }
}

/// The protocol name a live frame's summary carries: `--proto icmp` towards an IPv6 address is
/// ICMPv6.
fn live_proto(p: crate::datapath::trace::Proto, v6: bool) -> String {
    match p {
        crate::datapath::trace::Proto::Icmp if v6 => "icmpv6".into(),
        p => p.name().into(),
    }
}

fn trace_live(client: &Client, args: TraceArgs) -> Result<i32> {
    let filter = LiveFilter::new(&args)?;
    let (_, mut stream) = client.open_stream(&Request::TraceLive {
        network: args.network.clone(),
        sandbox: args.sandbox.clone(),
    })?;
    if let Some(secs) = args.timeout {
        stream
            .get_ref()
            .set_read_timeout(Some(std::time::Duration::from_secs(secs.max(1))))
            .context(|| "set the trace timeout".into())?;
    }
    let mut seen = 0;
    let mut line = String::new();
    while seen < args.count {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::invalid(format!(
                    "trace --live: no matching frame on network {} within the timeout ({seen} seen)",
                    args.network
                )));
            }
            Err(e) => {
                return Err(Error::Io {
                    context: "read the live trace".into(),
                    source: e,
                });
            }
        }
        let Ok(live) = serde_json::from_str::<LiveLine>(line.trim_end()) else {
            return Err(Error::Remote(
                "the daemon sent an unreadable trace line".into(),
            ));
        };
        if !filter.wants(&live) {
            continue;
        }
        seen += 1;
        match args.format {
            Format::Json => outln!("{}", line.trim_end())?,
            Format::Table => outln!(
                "{} -> {} {}: {}",
                live.ingress,
                live.output.as_deref().unwrap_or("*"),
                live.decision,
                live.frame.line()
            )?,
        }
    }
    // Hang up: the daemon ends the trace when it notices.
    drop(stream.get_mut().shutdown(std::net::Shutdown::Both));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::trace::Proto;

    #[test]
    fn dst_takes_a_mac_or_either_ip_family() {
        for ok in [
            "02:42:0a:00:00:02",
            "10.0.0.2",
            "fd00::2",
            "fe80::42:aff:fe00:2",
        ] {
            assert_eq!(mac_or_ip_syntax(ok).as_deref(), Ok(ok));
        }
        for bad in ["nowhere", "fd00::zz", "10.0.0.256", ""] {
            let err = mac_or_ip_syntax(bad).err().unwrap_or_default();
            assert!(err.contains("MAC, an IPv4 or an IPv6"), "{bad}: {err}");
        }
    }

    #[test]
    fn icmp_towards_ipv6_is_icmpv6() {
        assert_eq!(live_proto(Proto::Icmp, true), "icmpv6");
        assert_eq!(live_proto(Proto::Icmp, false), "icmp");
        assert_eq!(live_proto(Proto::Tcp, true), "tcp");
    }
}
