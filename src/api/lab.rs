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
