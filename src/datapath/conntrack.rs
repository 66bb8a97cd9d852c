//! A network's connection table: the flows its policy admitted, so their later frames (the
//! replies too) pass without the rules. Bounded and allocated once: buckets of `WAYS` entries,
//! each under its own (uncontended, futex) lock, a flow hashed to one bucket. An entry lives
//! until its deadline (TCP: 30 s until the SYN is answered, an hour once established, 10 s
//! after a FIN or RST; UDP 60 s; ICMP and others 30 s), refreshed by every frame; an expired
//! slot is reused in place, so nothing sweeps. A new flow whose bucket holds `WAYS` live flows
//! is refused (`Track::Full`): past the bound, established flows keep flowing, new ones wait.

use std::sync::Mutex;

use super::policy::{PROTO_TCP, PROTO_UDP};

/// Entries per bucket.
const WAYS: usize = 8;
/// Default bound of a network's table (`policy_flows`).
pub const DEFAULT_MAX_FLOWS: usize = 16384;

const TCP_SYN_SECS: u32 = 30;
const TCP_ESTABLISHED_SECS: u32 = 3600;
const TCP_CLOSING_SECS: u32 = 10;
const UDP_SECS: u32 = 60;
const OTHER_SECS: u32 = 30;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// A flow, the same both ways: the lower (address, port) end first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    a: u128,
    b: u128,
    pa: u16,
    pb: u16,
    proto: u8,
}

impl FlowKey {
    pub fn new(src: u128, sport: u16, dst: u128, dport: u16, proto: u8) -> Self {
        if (src, sport) <= (dst, dport) {
            FlowKey {
                a: src,
                b: dst,
                pa: sport,
                pb: dport,
                proto,
            }
        } else {
            FlowKey {
                a: dst,
                b: src,
                pa: dport,
                pb: sport,
                proto,
            }
        }
    }

    #[inline]
    fn hash(&self) -> u64 {
        // Fold and multiply (FxHash's constant): good enough spread, a few cycles.
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = (self.a as u64) ^ ((self.a >> 64) as u64).rotate_left(17);
        h = (h.rotate_left(5) ^ (self.b as u64)).wrapping_mul(K);
        h = (h.rotate_left(5) ^ ((self.b >> 64) as u64)).wrapping_mul(K);
        h = (h.rotate_left(5)
            ^ (u64::from(self.pa) << 24 | u64::from(self.pb) << 8 | u64::from(self.proto)))
        .wrapping_mul(K);
        h ^ (h >> 29)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum State {
    #[default]
    Free,
    /// A TCP SYN went, no ACK came yet.
    Opening,
    Open,
    /// FIN or RST seen.
    Closing,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: FlowKey,
    /// Clock second after which the slot is free again.
    expires: u32,
    state: State,
}

impl Entry {
    fn live(&self, now: u32) -> bool {
        self.state != State::Free && self.expires >= now
    }
}

/// The outcome of `insert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    Added,
    /// The flow's bucket is full of live flows.
    Full,
}

pub struct ConnTable {
    buckets: Box<[Mutex<[Entry; WAYS]>]>,
    mask: usize,
}

fn lock(m: &Mutex<[Entry; WAYS]>) -> std::sync::MutexGuard<'_, [Entry; WAYS]> {
    // A poisoned bucket holds plain data, still consistent: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state and lifetime a frame with `flags` gives a flow that was `state`.
fn advance(state: State, proto: u8, flags: u8) -> (State, u32) {
    if proto == PROTO_TCP {
        if flags & (TCP_FIN | TCP_RST) != 0 || state == State::Closing {
            return (State::Closing, TCP_CLOSING_SECS);
        }
        if flags & TCP_ACK != 0 || (state == State::Open && flags & TCP_SYN == 0) {
            return (State::Open, TCP_ESTABLISHED_SECS);
        }
        return (State::Opening, TCP_SYN_SECS);
    }
    let secs = if proto == PROTO_UDP {
        UDP_SECS
    } else {
        OTHER_SECS
    };
    (State::Open, secs)
}

impl ConnTable {
    /// A table of about `max_flows` entries (rounded up to whole buckets, a power of two).
    pub fn new(max_flows: usize) -> Self {
        let buckets = max_flows.div_ceil(WAYS).max(1).next_power_of_two();
        ConnTable {
            buckets: (0..buckets)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect(),
            mask: buckets - 1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    #[inline]
    fn bucket(&self, key: &FlowKey) -> &Mutex<[Entry; WAYS]> {
        &self.buckets[(key.hash() as usize) & self.mask]
    }

    /// Is `key` a live flow? Refreshes nothing (`tapnet trace`).
    pub fn contains(&self, key: &FlowKey, now: u32) -> bool {
        lock(self.bucket(key))
            .iter()
            .any(|e| e.key == *key && e.live(now))
    }

    /// Refresh a live flow with a frame of it: true if it was there.
    #[inline]
    pub fn refresh(&self, key: &FlowKey, proto: u8, flags: u8, now: u32) -> bool {
        let mut b = lock(self.bucket(key));
        match b.iter_mut().find(|e| e.key == *key && e.live(now)) {
            Some(e) => {
                let (state, secs) = advance(e.state, proto, flags);
                e.state = state;
                e.expires = now.saturating_add(secs);
                true
            }
            None => false,
        }
    }

    /// Add a flow its first frame (with TCP `flags`) opens, in a free or expired slot.
    pub fn insert(&self, key: &FlowKey, proto: u8, flags: u8, now: u32) -> Track {
        let mut b = lock(self.bucket(key));
        match b.iter_mut().find(|e| !e.live(now)) {
            Some(e) => {
                let (state, secs) = advance(State::Free, proto, flags);
                *e = Entry {
                    key: *key,
                    expires: now.saturating_add(secs),
                    state,
                };
                Track::Added
            }
            None => Track::Full,
        }
    }

    /// Live flows now (a walk over every bucket: for stats, not the hot path).
    pub fn live(&self, now: u32) -> usize {
        self.buckets
            .iter()
            .map(|b| lock(b).iter().filter(|e| e.live(now)).count())
            .sum()
    }

    /// Forget every flow (`policy add --reset-flows`).
    pub fn flush(&self) {
        for b in self.buckets.iter() {
            *lock(b) = [Entry::default(); WAYS];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey::new(1, n, 2, 80, PROTO_TCP)
    }

    #[test]
    fn a_flow_is_one_key_both_ways() {
        assert_eq!(
            FlowKey::new(1, 1000, 2, 80, PROTO_TCP),
            FlowKey::new(2, 80, 1, 1000, PROTO_TCP)
        );
        assert_ne!(
            FlowKey::new(1, 1000, 2, 80, PROTO_TCP),
            FlowKey::new(1, 1000, 2, 80, PROTO_UDP)
        );
    }

    #[test]
    fn tcp_ages_by_state() {
        let t = ConnTable::new(64);
        assert_eq!(t.insert(&key(1), PROTO_TCP, TCP_SYN, 0), Track::Added);
        assert!(t.contains(&key(1), TCP_SYN_SECS));
        assert!(
            !t.contains(&key(1), TCP_SYN_SECS + 1),
            "unanswered SYN expires"
        );
        t.insert(&key(2), PROTO_TCP, TCP_SYN, 0);
        assert!(t.refresh(&key(2), PROTO_TCP, TCP_SYN | TCP_ACK, 1));
        assert!(t.contains(&key(2), 1000), "established lives long");
        assert!(t.refresh(&key(2), PROTO_TCP, TCP_FIN | TCP_ACK, 1000));
        assert!(
            t.refresh(&key(2), PROTO_TCP, TCP_ACK, 1001),
            "closing stays closing"
        );
        assert!(!t.contains(&key(2), 1001 + TCP_CLOSING_SECS + 1));
    }

    #[test]
    fn bounded_refuses_new_flows_keeps_old_and_reuses_expired_slots() {
        let t = ConnTable::new(WAYS);
        assert_eq!(t.capacity(), WAYS);
        for n in 0..WAYS as u16 {
            assert_eq!(t.insert(&key(n), PROTO_UDP, 0, 0), Track::Added);
        }
        assert_eq!(t.insert(&key(99), PROTO_UDP, 0, 0), Track::Full);
        assert!(t.refresh(&key(0), PROTO_UDP, 0, 10));
        assert_eq!(t.live(10), WAYS);
        // All but key 0 expire: their slots take new flows.
        assert_eq!(t.insert(&key(99), PROTO_UDP, 0, UDP_SECS + 1), Track::Added);
        assert!(t.contains(&key(0), UDP_SECS + 1));
        t.flush();
        assert_eq!(t.live(UDP_SECS + 1), 0);
    }
}
