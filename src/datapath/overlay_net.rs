//! One overlay network on a VTEP, shared by every datapath worker: its VNI, its peers and the
//! remote stations behind them, learned from what arrives or told by the cluster store.
//! Workers encapsulate through it (`overlay_tx.rs`) and learn into it as they decapsulate
//! (`overlay_rx.rs`); the control plane replaces the cluster's part and reads the table.
//!
//! The table is behind a read-write lock: every super-frame sent and every datagram received
//! reads it, and a write happens only for a station that is new, moved, or last refreshed more
//! than `REFRESH` ago, so the workers do not queue on it under steady traffic. Entries older
//! than the network's aging time count as unknown (their frames flood) and are purged when the
//! table is full.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::overlay_tx::{Scratch, VtepTx};
use super::vtep::{ClusterView, NetworkSpec, RemoteRow};
use crate::wire::MacAddr;

/// Remote stations one network learns at most; more are flooded, not learned.
pub const MAX_REMOTE_MACS: usize = 4096;
/// A known station's entry is rewritten (its age reset) at most this often.
const REFRESH: Duration = Duration::from_secs(1);

pub struct OverlayNet {
    pub vni: u32,
    pub mtu: usize,
    /// The network's anycast gateway: never carried between hosts.
    pub gateway_mac: Option<MacAddr>,
    /// Coalesce received TCP segments into super-frames (the network's TAPs take offloads).
    pub coalesce: bool,
    aging: Duration,
    /// The VTEP's end of the network's switch port: answers to ARP and neighbour solicitations
    /// for remote stations are written here, and the switch reads them as from the VTEP.
    pub(super) answers: OwnedFd,
    pub(super) tx: Arc<VtepTx>,
    table: RwLock<Table>,
    /// Worker i's segmenter and queued packets, made at its first frame: only that worker
    /// locks it, so the lock is never contended.
    scratch: Box<[Mutex<Option<Box<Scratch>>>]>,
}

/// Where frames of one network go, and who may send them.
#[derive(Default)]
pub(super) struct Table {
    /// The static peers and the cluster's.
    pub(super) peers: Vec<SocketAddr>,
    static_peers: Vec<SocketAddr>,
    /// Remote MAC -> (its VTEP, last seen).
    remote: HashMap<MacAddr, (SocketAddr, Instant)>,
    /// Remote MACs from the cluster store: never aged, looked up first.
    stations: HashMap<MacAddr, SocketAddr>,
    /// Remote addresses from the cluster store: ARP for them is answered here.
    pub(super) addresses: HashMap<Ipv4Addr, MacAddr>,
    /// Remote IPv6 addresses from the cluster store: Neighbour Solicitations for them are
    /// answered here.
    pub(super) addresses6: HashMap<Ipv6Addr, MacAddr>,
}

impl Table {
    /// The VTEP of a unicast `dst` when it is known and fresh; None: flood to every peer.
    pub(super) fn destination(&self, dst: MacAddr, aging: Duration) -> Option<SocketAddr> {
        if dst.is_multicast() {
            return None;
        }
        if let Some(vtep) = self.stations.get(&dst) {
            return Some(*vtep);
        }
        self.remote
            .get(&dst)
            .filter(|(_, seen)| seen.elapsed() < aging)
            .map(|(vtep, _)| *vtep)
    }

    /// The peer a datagram from `from` came from: its address and port, or (a peer sending
    /// from a flow-hashed source port, as VTEPs do) its address. Learning is against the
    /// peer's VXLAN port, not the packet's source port.
    pub(super) fn peer(&self, from: SocketAddr) -> Option<SocketAddr> {
        self.peers
            .iter()
            .find(|p| **p == from)
            .or_else(|| self.peers.iter().find(|p| p.ip() == from.ip()))
            .copied()
    }
}

impl OverlayNet {
    pub fn new(spec: NetworkSpec, tx: Arc<VtepTx>) -> OverlayNet {
        OverlayNet {
            vni: spec.vni,
            mtu: spec.mtu,
            gateway_mac: spec.gateway_mac,
            coalesce: spec.coalesce,
            aging: spec.aging,
            answers: spec.fd,
            scratch: (0..tx.workers).map(|_| Mutex::new(None)).collect(),
            tx,
            table: RwLock::new(Table {
                peers: spec.peers.clone(),
                static_peers: spec.peers,
                remote: HashMap::with_capacity(MAX_REMOTE_MACS),
                ..Table::default()
            }),
        }
    }

    pub(super) fn aging(&self) -> Duration {
        self.aging
    }

    pub(super) fn scratch(&self, worker: usize) -> MutexGuard<'_, Option<Box<Scratch>>> {
        let slot = &self.scratch[worker % self.scratch.len()];
        crate::guard::lock_or_stop(slot, "a VTEP's send buffers")
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Table> {
        // A worker that panicked holding the lock left maps that are whole: go on with them.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `mac` was seen behind `peer`: learn or refresh it, unless the cluster store names it.
    pub(super) fn learn(&self, mac: MacAddr, peer: SocketAddr) {
        {
            let table = self.read();
            if table.stations.contains_key(&mac) {
                return;
            }
            if let Some((vtep, seen)) = table.remote.get(&mac)
                && *vtep == peer
                && seen.elapsed() < REFRESH
            {
                return;
            }
        }
        let now = Instant::now();
        let aging = self.aging;
        let mut table = self.write();
        if let Some(e) = table.remote.get_mut(&mac) {
            *e = (peer, now);
            return;
        }
        if table.remote.len() >= MAX_REMOTE_MACS {
            table
                .remote
                .retain(|_, (_, seen)| now.duration_since(*seen) < aging);
        }
        if table.remote.len() < MAX_REMOTE_MACS {
            table.remote.insert(mac, (peer, now));
        }
    }

    /// The remote stations learned and not aged out, by MAC.
    pub fn remotes(&self) -> Vec<RemoteRow> {
        let table = self.read();
        let mut rows: Vec<RemoteRow> = table
            .remote
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() < self.aging)
            .map(|(mac, (vtep, seen))| RemoteRow {
                mac: *mac,
                vtep: *vtep,
                age_s: seen.elapsed().as_secs(),
            })
            .collect();
        rows.sort_by_key(|r| r.mac.to_u64());
        rows
    }

    /// Replace what the cluster store says of the other hosts: their VTEPs join the static
    /// peers, their stations and addresses replace the previous ones.
    pub fn set_cluster(&self, view: ClusterView) {
        let mut table = self.write();
        let mut peers = table.static_peers.clone();
        for p in view.peers {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        table.peers = peers;
        table.stations = view.stations;
        table.addresses = view.addresses;
        table.addresses6 = view.addresses6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(peers: &[&str], aging: Duration) -> OverlayNet {
        let (_, fd) = crate::drivers::bridge::gateway_port().expect("socketpair");
        let spec = NetworkSpec {
            vni: 42,
            fd,
            peers: peers.iter().map(|p| p.parse().expect("peer")).collect(),
            mtu: 1450,
            aging,
            gateway_mac: None,
            coalesce: false,
        };
        OverlayNet::new(spec, Arc::new(VtepTx::for_tests()))
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);

    #[test]
    fn a_station_is_learned_against_its_peers_vxlan_port_not_the_source_port() {
        let n = net(
            &["10.0.0.2:4789", "10.0.0.3:4789"],
            Duration::from_secs(300),
        );
        let table = n.read();
        let peer = table.peer("10.0.0.3:51234".parse().expect("addr"));
        assert_eq!(peer, Some("10.0.0.3:4789".parse().expect("addr")));
        assert_eq!(table.peer("10.0.0.9:4789".parse().expect("addr")), None);
        drop(table);
        n.learn(A, "10.0.0.3:4789".parse().expect("addr"));
        assert_eq!(
            n.read().destination(A, n.aging()),
            Some("10.0.0.3:4789".parse().expect("addr"))
        );
        // A station that moves is learned again at once.
        n.learn(A, "10.0.0.2:4789".parse().expect("addr"));
        assert_eq!(
            n.read().destination(A, n.aging()),
            Some("10.0.0.2:4789".parse().expect("addr"))
        );
        assert_eq!(n.remotes().len(), 1);
        // Broadcast and multicast always flood.
        assert_eq!(n.read().destination(MacAddr::BROADCAST, n.aging()), None);
    }

    #[test]
    fn an_aged_station_floods_and_the_cluster_store_wins() {
        let n = net(&["10.0.0.2:4789"], Duration::ZERO);
        n.learn(A, "10.0.0.2:4789".parse().expect("addr"));
        assert_eq!(n.read().destination(A, n.aging()), None);
        assert!(n.remotes().is_empty());
        let mut view = ClusterView::default();
        view.peers.push("10.0.0.7:4789".parse().expect("addr"));
        view.stations
            .insert(A, "10.0.0.7:4789".parse().expect("addr"));
        n.set_cluster(view);
        let table = n.read();
        assert_eq!(table.peers.len(), 2);
        assert_eq!(
            table.destination(A, n.aging()),
            Some("10.0.0.7:4789".parse().expect("addr"))
        );
    }

    #[test]
    fn a_full_table_purges_aged_entries_and_never_grows_past_its_limit() {
        let n = net(&["10.0.0.2:4789"], Duration::from_secs(300));
        let peer: SocketAddr = "10.0.0.2:4789".parse().expect("addr");
        for i in 0..(MAX_REMOTE_MACS as u64 + 10) {
            n.learn(MacAddr::from_u64(0x0200_0000_0000 | i), peer);
        }
        assert_eq!(n.remotes().len(), MAX_REMOTE_MACS);
    }
}
