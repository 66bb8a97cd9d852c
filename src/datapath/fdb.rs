//! The MAC table (forwarding database) of one network.
//!
//! Read on every frame by every datapath thread, written rarely (a new station or a station that
//! moved). So lookups take no lock: the table is a fixed array of slots with open addressing, each
//! slot guarded by a sequence counter (a seqlock). Writers that add or move entries serialise on a
//! per-network mutex; refreshing the age of a known station is a single relaxed store. A reader
//! that races a writer retries; the worst a reader can see is a miss, and a miss only floods.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::frame::MacAddr;

/// Slots per table: a power of two. Inserts stop at 3/4 full (3072 stations per network).
const SLOTS: usize = 4096;
const MAX_LIVE: usize = SLOTS * 3 / 4;
const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
/// Marks a slot key as holding a MAC (a MAC is 48 bits, so this bit never clashes with one).
const LIVE: u64 = 1 << 48;

pub type PortId = u32;

pub const DEFAULT_AGING_SECS: u32 = 300;

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
}

pub struct Fdb {
    slots: Box<[Slot]>,
    writer: Mutex<()>,
    live: AtomicU32,
    aging_secs: AtomicU32,
}

impl Fdb {
    pub fn new(aging_secs: u32) -> Self {
        Fdb {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            writer: Mutex::new(()),
            live: AtomicU32::new(0),
            aging_secs: AtomicU32::new(aging_secs),
        }
    }

    pub fn set_aging(&self, secs: u32) {
        self.aging_secs.store(secs, Ordering::Relaxed);
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
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((i, p, _)) = self.find(key) {
            Self::write(&self.slots[i], key, port, now);
            return if p == port {
                Learned::Refreshed
            } else {
                Learned::Moved { from: p }
            };
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
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = 0;
        for i in 0..SLOTS {
            let (k, port, seen) = Self::read(&self.slots[i]);
            if k != EMPTY && k != TOMBSTONE && doomed(port, seen) {
                self.remove_at(i);
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
    fn concurrent_readers_never_see_a_wrong_port() {
        use std::sync::Arc;
        let fdb = Arc::new(Fdb::new(300));
        // Station n always lives on port n % 8; writers churn other stations around it.
        for n in 0..512 {
            fdb.learn(mac(n), n % 8, 0);
        }
        let writer = {
            let fdb = fdb.clone();
            std::thread::spawn(move || {
                for round in 0..200 {
                    for n in 1000..1400 {
                        fdb.learn(mac(n), round % 8, 0);
                    }
                    fdb.flush_port(round % 8 + 100);
                }
            })
        };
        for _ in 0..200 {
            for n in 0..512 {
                if let Some(p) = fdb.lookup(mac(n), 0) {
                    assert_eq!(p, n % 8);
                }
            }
        }
        writer.join().unwrap();
    }
}
