//! The MAC table (forwarding database) of one network.
//!
//! Read on every frame by every datapath thread, written rarely (a new station or a station that
//! moved). So lookups take no lock: the table is a fixed array of slots with open addressing, each
//! slot guarded by a sequence counter (a seqlock). Writers that add or move entries serialise on a
//! per-network mutex; refreshing the age of a known station is a single relaxed store. A reader
//! that races a writer retries; the worst a reader can see is a miss, and a miss only floods.
//!
//! Learning is bounded per port (as port security on a hardware switch, or OVS's per-port MAC
//! limit): a port that already owns `port_limit` stations learns no more, so one sandbox that
//! floods random source MACs cannot fill the table and leave its neighbours unlearned (which
//! would flood their traffic to it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::wire::MacAddr;

/// Slots per table: a power of two. Inserts stop at 3/4 full (3072 stations per network).
const SLOTS: usize = 4096;
const MAX_LIVE: usize = SLOTS * 3 / 4;
const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
/// Marks a slot key as holding a MAC (a MAC is 48 bits, so this bit never clashes with one).
const LIVE: u64 = 1 << 48;

pub type PortId = u32;

pub const DEFAULT_AGING_SECS: u32 = 300;
/// Stations one port may own unless the network says otherwise (`--opt max_macs_per_port=N`).
pub const DEFAULT_PORT_LIMIT: u32 = 64;

#[derive(Default)]
struct Slot {
    seq: AtomicU32,
    port: AtomicU32,
    seen: AtomicU32,
    key: AtomicU64,
}

/// One row of `tapnet fdb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: PortId,
    pub age_secs: u32,
}

/// What `learn` did, for counters and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    Refreshed,
    New,
    Moved {
        from: PortId,
    },
    /// The table is full: the station is not learned and frames to it flood.
    Full,
    /// The port owns its limit of stations already: not learned (the frame still goes out).
    PortLimit,
}

/// What writers share under the writer lock: how many stations each port owns.
#[derive(Default)]
struct Owners {
    per_port: HashMap<PortId, u32>,
}

impl Owners {
    fn count(&self, port: PortId) -> u32 {
        self.per_port.get(&port).copied().unwrap_or(0)
    }
    fn add(&mut self, port: PortId) {
        *self.per_port.entry(port).or_insert(0) += 1;
    }
    fn sub(&mut self, port: PortId) {
        if let Some(n) = self.per_port.get_mut(&port) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_port.remove(&port);
            }
        }
    }
}

pub struct Fdb {
    slots: Box<[Slot]>,
    writer: Mutex<Owners>,
    live: AtomicU32,
    aging_secs: AtomicU32,
    port_limit: AtomicU32,
}

impl Fdb {
    pub fn new(aging_secs: u32) -> Self {
        Fdb {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            writer: Mutex::new(Owners::default()),
            live: AtomicU32::new(0),
            aging_secs: AtomicU32::new(aging_secs),
            port_limit: AtomicU32::new(DEFAULT_PORT_LIMIT),
        }
    }

    /// Most stations one port may own (at least 1).
    pub fn set_port_limit(&self, limit: u32) {
        self.port_limit.store(limit.max(1), Ordering::Relaxed);
    }

    pub fn port_limit(&self) -> u32 {
        self.port_limit.load(Ordering::Relaxed)
    }

    /// Stations `port` owns now.
    #[cfg(test)]
    pub fn owned_by(&self, port: PortId) -> u32 {
        crate::guard::lock_or_stop(&self.writer, "a MAC table").count(port)
    }

    pub fn aging(&self) -> u32 {
        self.aging_secs.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn home(key: u64) -> usize {
        // Fibonacci hashing: the low bits of a MAC are the varying ones, spread them over the table.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// A consistent snapshot of a slot: (key, port, seen).
    fn read(slot: &Slot) -> (u64, PortId, u32) {
        loop {
            let before = slot.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let key = slot.key.load(Ordering::Relaxed);
            let port = slot.port.load(Ordering::Relaxed);
            let seen = slot.seen.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == before {
                return (key, port, seen);
            }
        }
    }

    /// Writers hold `self.writer`, so only one writes a slot at a time.
    fn write(slot: &Slot, key: u64, port: PortId, seen: u32) {
        let seq = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        slot.key.store(key, Ordering::Relaxed);
        slot.port.store(port, Ordering::Relaxed);
        slot.seen.store(seen, Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Index of the slot holding `key`, if any.
    fn find(&self, key: u64) -> Option<(usize, PortId, u32)> {
        let mut i = Self::home(key);
        for _ in 0..SLOTS {
            let (k, port, seen) = Self::read(&self.slots[i]);
            if k == key {
                return Some((i, port, seen));
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        None
    }

    fn expired(&self, seen: u32, now: u32) -> bool {
        now.saturating_sub(seen) > self.aging()
    }

    /// The port behind `mac`, unless unknown or aged out.
    pub fn lookup(&self, mac: MacAddr, now: u32) -> Option<PortId> {
        match self.find(mac.to_u64() | LIVE) {
            Some((_, port, seen)) if !self.expired(seen, now) => Some(port),
            _ => None,
        }
    }

    /// Record that `mac` was seen as a source on `port` at `now` (seconds).
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learned {
        let key = mac.to_u64() | LIVE;
        // Fast path, no lock: a known station on the same port only refreshes its age, and only
        // once a second, so that steady traffic does not bounce the cache line between cores.
        if let Some((i, p, seen)) = self.find(key)
            && p == port
        {
            if seen != now {
                self.slots[i].seen.store(now, Ordering::Relaxed);
            }
            return Learned::Refreshed;
        }
        let mut owners = crate::guard::lock_or_stop(&self.writer, "a MAC table");
        let found = self.find(key);
        if let Some((i, p, _)) = found
            && p == port
        {
            Self::write(&self.slots[i], key, port, now);
            return Learned::Refreshed;
        }
        if owners.count(port) >= self.port_limit() {
            return Learned::PortLimit;
        }
        if let Some((i, p, _)) = found {
            Self::write(&self.slots[i], key, port, now);
            owners.sub(p);
            owners.add(port);
            return Learned::Moved { from: p };
        }
        if self.len() >= MAX_LIVE {
            return Learned::Full;
        }
        let mut i = Self::home(key);
        loop {
            let (k, _, _) = Self::read(&self.slots[i]);
            if k == EMPTY || k == TOMBSTONE {
                Self::write(&self.slots[i], key, port, now);
                self.live.fetch_add(1, Ordering::Relaxed);
                owners.add(port);
                return Learned::New;
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }

    /// Remove the slot at `i` (writer lock held). A tombstone keeps probe chains intact; where
    /// the next slot is empty no chain runs through, so tombstones before it can become empty.
    fn remove_at(&self, i: usize) {
        let next = (i + 1) & (SLOTS - 1);
        if Self::read(&self.slots[next]).0 == EMPTY {
            let mut j = i;
            loop {
                Self::write(&self.slots[j], EMPTY, 0, 0);
                j = (j + SLOTS - 1) & (SLOTS - 1);
                if Self::read(&self.slots[j]).0 != TOMBSTONE {
                    break;
                }
            }
        } else {
            Self::write(&self.slots[i], TOMBSTONE, 0, 0);
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    fn remove_where(&self, mut doomed: impl FnMut(PortId, u32) -> bool) -> usize {
        let mut owners = crate::guard::lock_or_stop(&self.writer, "a MAC table");
        let mut removed = 0;
        for i in 0..SLOTS {
            let (k, port, seen) = Self::read(&self.slots[i]);
            if k != EMPTY && k != TOMBSTONE && doomed(port, seen) {
                self.remove_at(i);
                owners.sub(port);
                removed += 1;
            }
        }
        removed
    }

    /// Drop entries not refreshed within the aging time. Returns how many went.
    pub fn expire(&self, now: u32) -> usize {
        self.remove_where(|_, seen| self.expired(seen, now))
    }

    /// Forget every station behind `port` (the port is going away).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_where(|p, _| p == port)
    }

    /// Live entries, sorted by MAC.
    pub fn entries(&self, now: u32) -> Vec<FdbEntry> {
        let mut out: Vec<FdbEntry> = self
            .slots
            .iter()
            .map(Self::read)
            .filter(|&(k, _, seen)| k != EMPTY && k != TOMBSTONE && !self.expired(seen, now))
            .map(|(k, port, seen)| FdbEntry {
                mac: MacAddr::from_u64(k & !LIVE),
                port,
                age_secs: now.saturating_sub(seen),
            })
            .collect();
        out.sort_by_key(|e| e.mac);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([2, 0x42, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let fdb = Fdb::new(300);
        assert_eq!(fdb.lookup(mac(1), 0), None);
        assert_eq!(fdb.learn(mac(1), 7, 0), Learned::New);
        assert_eq!(fdb.lookup(mac(1), 0), Some(7));
        assert_eq!(fdb.learn(mac(1), 7, 5), Learned::Refreshed);
        assert_eq!(fdb.learn(mac(1), 9, 6), Learned::Moved { from: 7 });
        assert_eq!(fdb.lookup(mac(1), 6), Some(9));
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn ages_out() {
        let fdb = Fdb::new(10);
        fdb.learn(mac(1), 1, 100);
        fdb.learn(mac(2), 2, 105);
        assert_eq!(fdb.lookup(mac(1), 110), Some(1));
        assert_eq!(fdb.lookup(mac(1), 111), None, "stale entries are misses");
        assert_eq!(fdb.expire(111), 1);
        assert_eq!(fdb.len(), 1);
        let e = fdb.entries(111);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].mac, mac(2));
        assert_eq!(e[0].age_secs, 6);
    }

    #[test]
    fn flush_port_keeps_other_ports_reachable() {
        let fdb = Fdb::new(300);
        fdb.set_port_limit(u32::MAX);
        for n in 0..1000 {
            fdb.learn(mac(n), n % 3, 0);
        }
        assert_eq!(fdb.flush_port(1), 333);
        for n in 0..1000 {
            let want = if n % 3 == 1 { None } else { Some(n % 3) };
            assert_eq!(fdb.lookup(mac(n), 0), want, "mac {n}");
        }
    }

    #[test]
    fn stops_learning_when_full_and_recovers() {
        let fdb = Fdb::new(300);
        fdb.set_port_limit(u32::MAX);
        for n in 0..MAX_LIVE as u32 {
            assert_eq!(fdb.learn(mac(n), 1, 0), Learned::New);
        }
        assert_eq!(fdb.learn(mac(u32::MAX), 1, 0), Learned::Full);
        assert_eq!(fdb.lookup(mac(u32::MAX), 0), None);
        fdb.flush_port(1);
        assert!(fdb.is_empty());
        // After churn the table must still answer lookups of absent keys (no endless probing).
        assert_eq!(fdb.lookup(mac(12345), 0), None);
        assert_eq!(fdb.learn(mac(u32::MAX), 2, 0), Learned::New);
    }

    #[test]
    fn a_port_learns_no_more_than_its_limit_and_others_still_learn() {
        let fdb = Fdb::new(300);
        fdb.set_port_limit(4);
        for n in 0..4 {
            assert_eq!(fdb.learn(mac(n), 1, 0), Learned::New);
        }
        // A flood of new sources on port 1 is refused, one by one.
        for n in 4..1000 {
            assert_eq!(fdb.learn(mac(n), 1, 0), Learned::PortLimit);
        }
        assert_eq!(fdb.owned_by(1), 4);
        assert_eq!(fdb.len(), 4);
        // Known stations still refresh, and a well-behaved port still learns.
        assert_eq!(fdb.learn(mac(0), 1, 1), Learned::Refreshed);
        assert_eq!(fdb.learn(mac(5000), 2, 1), Learned::New);
        assert_eq!(fdb.lookup(mac(5000), 1), Some(2));
        // A station may not move onto a port at its limit (it stays where it was) ...
        assert_eq!(fdb.learn(mac(5000), 1, 1), Learned::PortLimit);
        assert_eq!(fdb.lookup(mac(5000), 1), Some(2));
        // ... but may once the port's stations age out or the port is flushed.
        assert_eq!(fdb.flush_port(1), 4);
        assert_eq!(fdb.owned_by(1), 0);
        assert_eq!(fdb.learn(mac(5000), 1, 2), Learned::Moved { from: 2 });
        assert_eq!((fdb.owned_by(1), fdb.owned_by(2)), (1, 0));
        fdb.set_port_limit(1000);
        assert_eq!(fdb.learn(mac(7), 1, 2), Learned::New);
    }

    #[test]
    fn a_station_flood_cannot_fill_the_table_with_the_default_limit() {
        let fdb = Fdb::new(300);
        for n in 0..1_000_000 {
            fdb.learn(mac(n), 1, 0);
        }
        assert_eq!(fdb.len(), DEFAULT_PORT_LIMIT as usize);
        for p in 2..40 {
            assert_eq!(
                fdb.learn(mac(2_000_000 + p), p, 0),
                Learned::New,
                "port {p}"
            );
        }
    }

    #[test]
    fn concurrent_readers_never_see_a_wrong_port() {
        use std::sync::Arc;
        let fdb = Arc::new(Fdb::new(300));
        fdb.set_port_limit(u32::MAX);
        // Station n always lives on port n % 8; a writer churns other stations around it: it
        // learns 400 on a port of their own and flushes that port, so every round really
        // inserts and removes (tombstones, backward clean-up) through the probe chains the
        // readers walk.
        for n in 0..512 {
            fdb.learn(mac(n), n % 8, 0);
        }
        let writer = {
            let fdb = fdb.clone();
            std::thread::spawn(move || {
                let mut removed = 0;
                for round in 0..200 {
                    let port = 100 + round % 8;
                    for n in 1000..1400 {
                        fdb.learn(mac(n), port, 0);
                    }
                    removed += fdb.flush_port(port);
                }
                removed
            })
        };
        let mut hits = 0;
        for _ in 0..200 {
            for n in 0..512 {
                let p = fdb.lookup(mac(n), 0);
                assert_eq!(p, Some(n % 8), "station {n} is never touched by the writer");
                hits += 1;
            }
        }
        assert_eq!(
            writer.join().unwrap(),
            200 * 400,
            "each flush removed a round's stations"
        );
        assert_eq!(hits, 200 * 512);
        assert_eq!(fdb.len(), 512);
    }
}
