//! `tapnet trace --live`: a JSON line per real frame with the switch's decision, streamed from
//! a capture sink (headers only) until the client hangs up. The client filters and counts.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use serde::{Deserialize, Serialize};

use crate::datapath::capture::CaptureSession;
use crate::datapath::fdb::PortId;
use crate::datapath::switch::Egress;
use crate::datapath::trace::{FrameSummary, summarize};

/// One line of `trace --live`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveLine {
    pub ingress: String,
    /// `unicast`, `flood` or `filter`.
    pub decision: String,
    /// The output port of a unicast frame.
    pub output: Option<String>,
    pub frame: FrameSummary,
}

pub fn stream(session: &CaptureSession, labels: &HashMap<PortId, String>, conn: UnixStream) {
    let Ok(probe) = conn.try_clone() else {
        return;
    };
    let mut out = BufWriter::new(conn);
    let label = |id: PortId| {
        labels
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("port {id}"))
    };
    loop {
        match session.records.recv_timeout(Duration::from_millis(250)) {
            Ok(record) => {
                let (decision, output) = match record.egress {
                    Egress::Unicast(p) => ("unicast", Some(label(p))),
                    Egress::Flood => ("flood", None),
                    Egress::Filter => ("filter", None),
                };
                let mut frame = summarize(&record.data);
                frame.len = record.orig_len as usize;
                let line = LiveLine {
                    ingress: label(record.ingress),
                    decision: decision.into(),
                    output,
                    frame,
                };
                session.sink.recycle(record);
                let Ok(mut text) = serde_json::to_string(&line) else {
                    continue;
                };
                text.push('\n');
                if out.write_all(text.as_bytes()).is_err() {
                    return;
                }
                if session.records.is_empty() && out.flush().is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if super::capture::client_done(&probe) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
