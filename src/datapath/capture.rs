//! Packet capture on a network: the datapath copies matching frames into a pool of preallocated
//! records, and a streaming thread writes them out as pcap. Frames are captured as they would be
//! on a wire: super-frames are segmented and partial checksums completed first. When the reader
//! falls behind, frames are dropped and counted rather than slowing the switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::fdb::PortId;
use super::port::NetId;
use super::switch::Egress;

/// Frames captures dropped because their reader fell behind (shown by `metrics`).
pub static CAPTURE_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Records in flight per capture.
const POOL: usize = 512;

pub struct CaptureRecord {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub orig_len: u32,
    pub data: Vec<u8>,
    /// The port the frame came in on and the switch's decision (`trace --live`).
    pub ingress: PortId,
    pub egress: Egress,
}

pub struct CaptureSink {
    pub id: u64,
    pub network: NetId,
    /// Only frames from or to these ports (a sandbox's); all frames when `None`.
    ports: Option<Vec<PortId>>,
    record_len: usize,
    free_rx: Receiver<CaptureRecord>,
    free_tx: Sender<CaptureRecord>,
    full_tx: Sender<CaptureRecord>,
    pub dropped: AtomicU64,
}

impl CaptureSink {
    /// A sink keeping at most `record_len` bytes of each frame, and the receiver of its records.
    pub fn new(
        id: u64,
        network: NetId,
        ports: Option<Vec<PortId>>,
        record_len: usize,
    ) -> (CaptureSink, Receiver<CaptureRecord>) {
        let (free_tx, free_rx) = crossbeam_channel::bounded(POOL);
        let (full_tx, full_rx) = crossbeam_channel::bounded(POOL);
        for _ in 0..POOL {
            let _ = free_tx.send(CaptureRecord {
                ts_sec: 0,
                ts_usec: 0,
                orig_len: 0,
                data: Vec::with_capacity(record_len),
                ingress: 0,
                egress: Egress::Filter,
            });
        }
        let sink = CaptureSink {
            id,
            network,
            ports,
            record_len,
            free_rx,
            free_tx,
            full_tx,
            dropped: AtomicU64::new(0),
        };
        (sink, full_rx)
    }

    /// Does a frame from `ingress`, going to `egress`, concern this capture?
    pub fn wants(&self, ingress: PortId, egress: Egress) -> bool {
        let Some(ports) = &self.ports else {
            return true;
        };
        ports.contains(&ingress)
            || match egress {
                Egress::Unicast(p) => ports.contains(&p),
                Egress::Flood => true,
                Egress::Filter => false,
            }
    }

    /// Copy one Ethernet frame (no virtio-net header) into a free record.
    pub fn push(&self, frame: &[u8], ingress: PortId, egress: Egress) {
        let Ok(mut record) = self.free_rx.try_recv() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            CAPTURE_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        record.ts_sec = now.as_secs() as u32;
        record.ts_usec = now.subsec_micros();
        record.orig_len = frame.len() as u32;
        record.ingress = ingress;
        record.egress = egress;
        record.data.clear();
        record
            .data
            .extend_from_slice(&frame[..frame.len().min(self.record_len)]);
        if self.full_tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            CAPTURE_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hand a written record back to the pool.
    pub fn recycle(&self, record: CaptureRecord) {
        let _ = self.free_tx.try_send(record);
    }
}

/// A running capture: records arrive on `records`; dropping the session stops the capture.
pub struct CaptureSession {
    pub sink: std::sync::Arc<CaptureSink>,
    pub records: Receiver<CaptureRecord>,
    pub snaplen: u32,
    datapath: std::sync::Arc<super::Datapath>,
}

impl CaptureSession {
    pub fn start(
        datapath: std::sync::Arc<super::Datapath>,
        sink: CaptureSink,
        records: Receiver<CaptureRecord>,
        snaplen: u32,
    ) -> Self {
        let sink = std::sync::Arc::new(sink);
        datapath.add_capture(sink.clone());
        CaptureSession {
            sink,
            records,
            snaplen,
            datapath,
        }
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.datapath
            .remove_capture(self.sink.network, self.sink.id);
    }
}
