//! `tapnet policy`: a network's ordered allow/deny rules between sandboxes.

use clap::{Args, Subcommand};

use super::output::{Format, json, table};
use crate::api::client::Client;
use crate::api::types::{PolicyView, Request};
use crate::control::policy::{Action, PolicyRule};
use crate::datapath::policy::Proto;
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Append a rule to NET's policy. The first rule that matches a new flow decides, else
    /// the network's `--opt policy_default` (allow unless set); an admitted flow's replies
    /// pass. SEL is a sandbox name or alias on NET (all its addresses there, both families)
    /// or a CIDR of either family.
    Add(PolicyAddArgs),
    /// Show NET's rules, in order, with the frames and bytes each decided.
    #[command(alias = "list")]
    Ls {
        /// The network.
        network: String,
        /// Print one JSON document (as `--format json`).
        #[arg(long)]
        json: bool,
        /// Output format: aligned table for people, one JSON document for scripts.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a rule by name.
    #[command(alias = "remove")]
    Rm {
        /// The network.
        network: String,
        /// The rule's name.
        rule: String,
    },
}

#[derive(Args, Debug)]
pub struct PolicyAddArgs {
    /// The network.
    pub network: String,
    /// The rule's name [default: rule-N, the first free].
    #[arg(long)]
    pub name: Option<String>,
    /// Source: sandbox, alias or CIDR [default: any].
    #[arg(long, value_name = "SEL")]
    pub from: Option<String>,
    /// Destination: sandbox, alias or CIDR (the real destination through the gateway's NAT)
    /// [default: any].
    #[arg(long, value_name = "SEL")]
    pub to: Option<String>,
    /// tcp, udp, icmp (ICMPv4 and ICMPv6) or any.
    #[arg(long, default_value = "any", value_parser = parse_proto)]
    pub proto: Proto,
    /// Destination port or range, N or N-M (with --proto tcp or udp) [default: any].
    #[arg(long, value_name = "N[-M]")]
    pub port: Option<String>,
    /// Admit matching flows.
    #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
    pub allow: bool,
    /// Refuse matching flows.
    #[arg(long)]
    pub deny: bool,
    /// Forget the flows already admitted, so the rules apply to them from their next frame
    /// (without it, a rule change affects only new flows).
    #[arg(long)]
    pub reset_flows: bool,
}

fn parse_proto(s: &str) -> std::result::Result<Proto, String> {
    Proto::parse(s).ok_or_else(|| format!("unknown protocol {s:?} (tcp, udp, icmp or any)"))
}

pub fn policy(client: &Client, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Add(a) => {
            let view: PolicyView = client.call(&Request::PolicyAdd {
                network: a.network,
                rule: PolicyRule {
                    name: a.name.unwrap_or_default(),
                    from: a.from,
                    to: a.to,
                    proto: a.proto,
                    port: a.port,
                    action: if a.allow { Action::Allow } else { Action::Deny },
                },
                reset_flows: a.reset_flows,
            })?;
            print(&view, Format::Table)
        }
        PolicyCmd::Ls {
            network,
            json,
            format,
        } => {
            let view: PolicyView = client.call(&Request::PolicyList { network })?;
            print(&view, if json { Format::Json } else { format })
        }
        PolicyCmd::Rm { network, rule } => {
            let view: PolicyView = client.call(&Request::PolicyRemove {
                network,
                name: rule,
            })?;
            print(&view, Format::Table)
        }
    }
}

fn print(view: &PolicyView, format: Format) -> Result<i32> {
    match format {
        Format::Json => out!("{}", json(view))?,
        Format::Table => {
            let action = |a: Action| match a {
                Action::Allow => "allow",
                Action::Deny => "deny",
            };
            let rows: Vec<Vec<String>> = view
                .rules
                .iter()
                .map(|r| {
                    let any = |s: &Option<String>| s.clone().unwrap_or_else(|| "any".into());
                    vec![
                        r.rule.name.clone(),
                        any(&r.rule.from),
                        any(&r.rule.to),
                        r.rule.proto.name().to_string(),
                        r.rule.port.clone().unwrap_or_else(|| "-".into()),
                        action(r.rule.action).to_string(),
                        r.packets.to_string(),
                        r.bytes.to_string(),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "NAME", "FROM", "TO", "PROTO", "PORT", "ACTION", "PACKETS", "BYTES"
                    ],
                    &rows
                )
            )?;
            let d = &view.drops;
            outln!(
                "network {}: icc {}, default {}, flows {}/{}, drops: icc {} rule {} default {} table_full {}",
                view.network,
                if view.icc { "on" } else { "off" },
                action(view.default),
                view.flows,
                view.max_flows,
                d.icc,
                d.rule,
                d.default,
                d.table_full
            )?;
        }
    }
    Ok(0)
}
