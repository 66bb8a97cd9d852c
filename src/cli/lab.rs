//! The lab commands: `tapnet link` (impairments and blocks).

use clap::{Args, Subcommand};

use super::output::{Format, json, table};
use crate::api::client::Client;
use crate::api::lab::{LinkChange, LinkRow};
use crate::api::types::Request;
use crate::datapath::impair::{parse_duration, parse_percent, parse_rate};
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum LinkCmd {
    /// Impair the link between a sandbox and a network's switch (frames towards the sandbox;
    /// `--both` also frames from it). Options not given keep their value; 0 turns one off.
    Set(LinkSetArgs),
    /// Show impaired and blocked links.
    Show {
        network: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove impairments and blocks (all, or a sandbox's, or a network's).
    Reset {
        sandbox: Option<String>,
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
    /// Drop every frame between two sandboxes (both ways) on NET or every network they share.
    Block {
        a: String,
        b: String,
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
    /// Undo `link block`.
    Unblock {
        a: String,
        b: String,
        #[arg(long = "net", value_name = "NET")]
        network: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct LinkSetArgs {
    pub sandbox: String,
    pub network: String,
    /// Added latency, e.g. 20ms.
    #[arg(long, value_name = "D")]
    pub delay: Option<String>,
    /// Latency varies uniformly by up to this much either way (at most --delay).
    #[arg(long, value_name = "D")]
    pub jitter: Option<String>,
    /// Frames dropped at random, e.g. 10%.
    #[arg(long, value_name = "P%")]
    pub loss: Option<String>,
    #[arg(long, value_name = "P%")]
    pub duplicate: Option<String>,
    /// Frames with one bit of their payload flipped.
    #[arg(long, value_name = "P%")]
    pub corrupt: Option<String>,
    /// Frames that skip the delay and overtake the others.
    #[arg(long, value_name = "P%")]
    pub reorder: Option<String>,
    /// Bandwidth limit (token bucket with a 100 ms queue), e.g. 10mbit.
    #[arg(long, value_name = "R")]
    pub rate: Option<String>,
    /// Take the link down: every frame is dropped.
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    #[arg(long)]
    pub up: bool,
    /// Seed of the random draws: the same seed drops the same frames.
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
        .map(|s| parse(s).map_err(Error::invalid))
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
            print_links(&rows, Format::Table);
        }
        LinkCmd::Show { network, format } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkShow { network })?;
            print_links(&rows, format);
        }
        LinkCmd::Reset { sandbox, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkReset { network, sandbox })?;
            print_links(&rows, Format::Table);
        }
        LinkCmd::Block { a, b, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkBlock {
                a,
                b,
                network,
                block: true,
            })?;
            print_links(&rows, Format::Table);
        }
        LinkCmd::Unblock { a, b, network } => {
            let rows: Vec<LinkRow> = client.call(&Request::LinkBlock {
                a,
                b,
                network,
                block: false,
            })?;
            print_links(&rows, Format::Table);
        }
    }
    Ok(0)
}

/// The `Link:` lines of `sandbox inspect`'s table: impairments and blocks per interface.
pub fn print_sandbox_links(s: &crate::api::types::SandboxView) {
    for i in &s.interfaces {
        let iface = i.interface.as_deref().unwrap_or("-");
        if let Some(imp) = &i.impairment {
            println!("Link:      {} {iface}: {}", i.network, imp.describe());
        }
        if !i.blocked.is_empty() {
            println!(
                "Blocked:   {} {iface}: from {}",
                i.network,
                i.blocked.join(", ")
            );
        }
    }
}

pub fn print_links(rows: &[LinkRow], format: Format) {
    match format {
        Format::Json => print!("{}", json(&rows)),
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
            print!(
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
            );
        }
    }
}
