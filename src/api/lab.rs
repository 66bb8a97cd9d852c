//! Request and view types of the lab tools: link impairments and blocks, trace.

use serde::{Deserialize, Serialize};

use crate::datapath::impair::{Impairment, LinkStats};

/// `tapnet link set`: each `Some` field replaces that setting; `None` keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkChange {
    pub sandbox: String,
    pub network: String,
    pub delay_us: Option<u64>,
    pub jitter_us: Option<u64>,
    pub loss_ppm: Option<u32>,
    pub duplicate_ppm: Option<u32>,
    pub corrupt_ppm: Option<u32>,
    pub reorder_ppm: Option<u32>,
    pub rate_bps: Option<u64>,
    pub down: Option<bool>,
    pub seed: Option<u64>,
    pub both: Option<bool>,
}

/// A row of `tapnet link show`: one endpoint with impairments or blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRow {
    pub network: String,
    pub sandbox: String,
    pub interface: String,
    pub impairment: Impairment,
    /// `delay 20ms loss 10%`, or `-`.
    pub summary: String,
    /// Sandboxes whose frames never reach this one on this network.
    pub blocked: Vec<String>,
    /// What the impairments did since the port was wired (absent when it has no port).
    pub stats: Option<LinkStats>,
}

/// `tapnet trace`: what would the switch do with such a frame from `sandbox`?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceRequest {
    pub network: String,
    pub sandbox: String,
    /// Source MAC; the sandbox's own by default.
    pub src: Option<String>,
    /// Destination MAC, IPv4 or IPv6 address.
    pub dst: String,
    pub proto: Option<String>,
    pub dport: Option<u16>,
}

/// One output port of a traced frame and what its link would do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceOutput {
    pub port: String,
    /// `send`, `blocked`, `down`, or the impairments in force (`delay 20ms loss 10%`).
    pub link: String,
    /// The link drops every such frame (blocked, or down).
    pub dropped: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    pub network: String,
    pub ingress: String,
    pub src_mac: String,
    pub dst_mac: String,
    pub dst_ip: Option<String>,
    /// `unicast`, `flood`, `filter` or `drop`.
    pub decision: String,
    pub outputs: Vec<TraceOutput>,
    /// What the gateway would do with it, when it goes there.
    pub gateway: Option<String>,
    /// The explanation, step by step.
    pub steps: Vec<String>,
}
