//! Link impairments on a switch port, netem-style: delay with jitter, loss, duplication,
//! corruption, reordering, a rate limit, link down, and partitions between two ports.
//!
//! Like smoltcp's `FaultInjector`, it is middleware wrapped around a port: `Link` sits in every
//! `Port`, and a port with nothing configured costs one relaxed atomic load per frame. A frame
//! that must wait is copied into the sending worker's `DelayQueue` (see delay.rs); nothing
//! sleeps, so a slow link never holds up the worker or another port.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fdb::PortId;

/// One million: probabilities are kept in parts per million, so a seed gives the same draws
/// on every machine (no floating point in the decision).
pub const PPM: u32 = 1_000_000;
/// A rate-limited link queues at most this much transmission time; later frames are dropped
/// (tail drop, as a router's queue), so TCP finds the bottleneck instead of an endless buffer.
const MAX_BACKLOG: Duration = Duration::from_millis(100);

/// What `tapnet link set` configures on one endpoint. Zero means "not impaired" for each field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impairment {
    #[serde(default)]
    pub delay_us: u64,
    #[serde(default)]
    pub jitter_us: u64,
    #[serde(default)]
    pub loss_ppm: u32,
    #[serde(default)]
    pub duplicate_ppm: u32,
    #[serde(default)]
    pub corrupt_ppm: u32,
    #[serde(default)]
    pub reorder_ppm: u32,
    /// Bits per second; 0 is unlimited.
    #[serde(default)]
    pub rate_bps: u64,
    #[serde(default)]
    pub down: bool,
    /// Seed of the drop/duplicate/corrupt draws; `None` draws a fresh one.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Also impair frames from the endpoint into the switch.
    #[serde(default)]
    pub both: bool,
}

impl Impairment {
    /// Nothing that changes a frame's fate is set.
    pub fn is_noop(&self) -> bool {
        self.delay_us == 0
            && self.jitter_us == 0
            && self.loss_ppm == 0
            && self.duplicate_ppm == 0
            && self.corrupt_ppm == 0
            && self.reorder_ppm == 0
            && self.rate_bps == 0
            && !self.down
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("loss", self.loss_ppm),
            ("duplicate", self.duplicate_ppm),
            ("corrupt", self.corrupt_ppm),
            ("reorder", self.reorder_ppm),
        ] {
            if v > PPM {
                return Err(format!("--{name} {}: above 100%", percent(v)));
            }
        }
        if self.jitter_us > self.delay_us {
            return Err(format!(
                "--jitter {} is larger than --delay {}",
                duration(self.jitter_us),
                duration(self.delay_us)
            ));
        }
        if self.delay_us > MAX_DELAY_US {
            return Err(format!("--delay {}: at most 60s", duration(self.delay_us)));
        }
        if self.rate_bps != 0 && self.rate_bps < MIN_RATE_BPS {
            return Err(format!("--rate {}bit: at least 8kbit", self.rate_bps));
        }
        Ok(())
    }

    /// `delay 20ms jitter 2ms loss 10% rate 10mbit down seed 7 both`, or `-`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.down {
            parts.push("down".to_string());
        }
        if self.delay_us > 0 {
            parts.push(format!("delay {}", duration(self.delay_us)));
        }
        if self.jitter_us > 0 {
            parts.push(format!("jitter {}", duration(self.jitter_us)));
        }
        for (name, v) in [
            ("loss", self.loss_ppm),
            ("duplicate", self.duplicate_ppm),
            ("corrupt", self.corrupt_ppm),
            ("reorder", self.reorder_ppm),
        ] {
            if v > 0 {
                parts.push(format!("{name} {}", percent(v)));
            }
        }
        if self.rate_bps > 0 {
            parts.push(format!("rate {}", rate(self.rate_bps)));
        }
        if parts.is_empty() {
            return "-".into();
        }
        if let Some(seed) = self.seed {
            parts.push(format!("seed {seed}"));
        }
        if self.both {
            parts.push("both".into());
        }
        parts.join(" ")
    }
}

/// The longest delay (and so jitter) a link takes.
pub const MAX_DELAY_US: u64 = 60_000_000;
/// The lowest rate limit; 0 means none.
pub const MIN_RATE_BPS: u64 = 8_000;

pub fn percent(ppm: u32) -> String {
    let whole = ppm / 10_000;
    let frac = ppm % 10_000;
    if frac == 0 {
        format!("{whole}%")
    } else {
        let s = format!("{whole}.{frac:04}");
        format!("{}%", s.trim_end_matches('0'))
    }
}

pub fn duration(us: u64) -> String {
    if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

pub fn rate(bps: u64) -> String {
    for (unit, div) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1000)] {
        if bps % div == 0 {
            return format!("{}{unit}", bps / div);
        }
    }
    format!("{bps}bit")
}

/// `20ms`, `1.5s`, `250us`, `0`: a duration in microseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e6)
    } else if t == "0" {
        ("0", 1.0)
    } else {
        return Err(format!(
            "bad duration {s:?}: expected a number with us, ms or s (20ms)"
        ));
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("bad duration {s:?}: expected a number with us, ms or s (20ms)"))?;
    let us = (v * scale).round();
    if us > MAX_DELAY_US as f64 {
        return Err(format!("bad duration {s:?}: at most 60s"));
    }
    Ok(us as u64)
}

/// `10%`, `0.5%` or `10`: a probability in parts per million.
pub fn parse_percent(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t);
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && (0.0..=100.0).contains(v))
        .ok_or_else(|| format!("bad percentage {s:?}: expected 0 to 100, e.g. 10%"))?;
    Ok((v * 10_000.0).round() as u32)
}

/// `10mbit`, `1gbit`, `500kbit`, `64000bit`, `0`: bits per second (SI units, as tc's).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let err = || format!("bad rate {s:?}: expected a number with bit, kbit, mbit or gbit (10mbit)");
    let (num, scale) = if let Some(n) = t.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n, 1.0)
    } else if t == "0" {
        ("0", 1.0)
    } else {
        return Err(err());
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v * scale < 1e15)
        .ok_or_else(err)?;
    let bps = (v * scale).round();
    // Only a rate of 0 lifts the limit: a tiny one is refused like any other below the minimum,
    // rather than rounding to 0 and lifting it.
    if v > 0.0 && bps < MIN_RATE_BPS as f64 {
        return Err(format!(
            "bad rate {s:?}: at least 8kbit (or 0 for no limit)"
        ));
    }
    Ok(bps as u64)
}

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` / 1,000,000. Draws nothing when `ppm` is 0, so turning one
    /// impairment off does not shift the draws of the others between runs of the same config.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next_u64() % u64::from(PPM) < u64::from(ppm)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Why an impaired link dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    Down,
    Loss,
    /// The rate limiter's queue was full.
    Queue,
    Blocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop(DropCause),
    /// Send after `delay` (zero: now), twice if `duplicate`, one bit flipped if `corrupt`.
    Pass {
        delay: Duration,
        duplicate: bool,
        corrupt: bool,
    },
}

/// One direction of an impaired link: the configuration plus its random and rate state.
#[derive(Debug)]
pub struct Shaper {
    pub config: Impairment,
    rng: SplitMix64,
    /// When the rate limiter's line is free again.
    line_free: Option<Instant>,
}

impl Shaper {
    pub fn new(config: Impairment, fallback_seed: u64) -> Self {
        let seed = config.seed.unwrap_or(fallback_seed);
        Shaper {
            config,
            rng: SplitMix64::new(seed),
            line_free: None,
        }
    }

    /// The fate of a frame of `len` bytes offered at `now`. Pure apart from the shaper's own
    /// state, so tests drive it with made-up clocks.
    pub fn judge(&mut self, len: usize, now: Instant) -> Verdict {
        let c = &self.config;
        if c.down {
            return Verdict::Drop(DropCause::Down);
        }
        if self.rng.chance(c.loss_ppm) {
            return Verdict::Drop(DropCause::Loss);
        }
        let mut delay_us = c.delay_us;
        if c.jitter_us > 0 {
            let span = 2 * c.jitter_us + 1;
            delay_us = (delay_us + self.rng.below(span)).saturating_sub(c.jitter_us);
        }
        if self.rng.chance(c.reorder_ppm) {
            // netem's reordering: this frame skips the delay and overtakes those waiting.
            delay_us = 0;
        }
        let duplicate = self.rng.chance(c.duplicate_ppm);
        let corrupt = self.rng.chance(c.corrupt_ppm);
        let mut delay = Duration::from_micros(delay_us);
        // Time on the line at the configured rate; none when unlimited.
        if let Some(airtime_ns) = (len as u64 * 8 * 1_000_000_000).checked_div(c.rate_bps) {
            let start = self.line_free.filter(|t| *t > now).unwrap_or(now);
            if start - now > MAX_BACKLOG {
                return Verdict::Drop(DropCause::Queue);
            }
            let airtime = Duration::from_nanos(airtime_ns);
            let done = start + airtime;
            self.line_free = Some(done);
            delay += done - now;
        }
        Verdict::Pass {
            delay,
            duplicate,
            corrupt,
        }
    }
}

/// Counters of what a link's impairments did, for `link show`, `stats` and metrics.
#[derive(Default, Debug)]
pub struct LinkCounters {
    pub dropped_down: AtomicU64,
    pub dropped_loss: AtomicU64,
    pub dropped_queue: AtomicU64,
    pub dropped_blocked: AtomicU64,
    /// Delayed frames that found the worker's delay queue full.
    pub dropped_overflow: AtomicU64,
    pub delayed: AtomicU64,
    pub duplicated: AtomicU64,
    pub corrupted: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    pub dropped_down: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub dropped_blocked: u64,
    pub dropped_overflow: u64,
    pub delayed: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

impl LinkCounters {
    pub fn count_drop(&self, cause: DropCause) {
        let c = match cause {
            DropCause::Down => &self.dropped_down,
            DropCause::Loss => &self.dropped_loss,
            DropCause::Queue => &self.dropped_queue,
            DropCause::Blocked => &self.dropped_blocked,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            dropped_down: g(&self.dropped_down),
            dropped_loss: g(&self.dropped_loss),
            dropped_queue: g(&self.dropped_queue),
            dropped_blocked: g(&self.dropped_blocked),
            dropped_overflow: g(&self.dropped_overflow),
            delayed: g(&self.delayed),
            duplicated: g(&self.duplicated),
            corrupted: g(&self.corrupted),
        }
    }
}

/// What a port's link has configured: both directions and the ports it is cut off from.
#[derive(Debug, Default)]
pub struct LinkState {
    /// Frames leaving the switch towards the endpoint.
    pub egress: Option<Shaper>,
    /// Frames from the endpoint into the switch (`--both`).
    pub ingress: Option<Shaper>,
    /// Ports whose frames never reach this one (`link block`; the partner lists this port).
    pub blocked: Vec<PortId>,
}

/// The middleware slot of a port. `active` is the only thing the plain path reads.
#[derive(Debug, Default)]
pub struct Link {
    active: AtomicBool,
    ingress_active: AtomicBool,
    state: Mutex<LinkState>,
    pub counters: LinkCounters,
}

impl Link {
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn ingress_active(&self) -> bool {
        self.ingress_active.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        crate::guard::lock_or_stop(&self.state, "a link's impairment state")
    }

    /// Replace the link's configuration; takes effect for the next frame. An unchanged
    /// configuration keeps its random and rate state unless `restart`: re-applying a seeded
    /// configuration with `restart` repeats its drop pattern.
    pub fn configure(
        &self,
        impairment: Option<&Impairment>,
        blocked: Vec<PortId>,
        salt: u64,
        restart: bool,
    ) {
        let mut st = self.lock();
        let current = st.egress.as_ref().map(|s| &s.config);
        if !restart && current == impairment.filter(|c| !c.is_noop()) && st.blocked == blocked {
            return;
        }
        let shaper = |c: &Impairment, dir: u64| Shaper::new(c.clone(), fresh_seed(salt ^ dir));
        st.egress = impairment.filter(|c| !c.is_noop()).map(|c| shaper(c, 0));
        st.ingress = impairment
            .filter(|c| c.both && !c.is_noop())
            .map(|c| shaper(c, 0x5eed));
        if let Some(s) = st.ingress.as_mut() {
            // The other direction draws from its own stream, still fixed by the seed.
            s.rng = SplitMix64::new(s.rng.next_u64() ^ 0xa5a5_a5a5_a5a5_a5a5);
        }
        st.blocked = blocked;
        self.ingress_active
            .store(st.ingress.is_some(), Ordering::Relaxed);
        self.active.store(
            st.egress.is_some() || st.ingress.is_some() || !st.blocked.is_empty(),
            Ordering::Relaxed,
        );
    }

    /// Fate of a frame from port `from` leaving through this link.
    pub fn judge_egress(&self, from: PortId, len: usize, now: Instant) -> Verdict {
        let mut st = self.lock();
        if st.blocked.contains(&from) {
            return Verdict::Drop(DropCause::Blocked);
        }
        match st.egress.as_mut() {
            Some(s) => s.judge(len, now),
            None => Verdict::Pass {
                delay: Duration::ZERO,
                duplicate: false,
                corrupt: false,
            },
        }
    }

    /// Fate of a frame entering the switch through this link (`--both`).
    pub fn judge_ingress(&self, len: usize, now: Instant) -> Verdict {
        match self.lock().ingress.as_mut() {
            Some(s) => s.judge(len, now),
            None => Verdict::Pass {
                delay: Duration::ZERO,
                duplicate: false,
                corrupt: false,
            },
        }
    }
}

/// A seed for links configured without one: the clock's nanoseconds mixed with `salt`.
fn fresh_seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    SplitMix64::new(nanos ^ salt).next_u64()
}

/// Flip one bit of an Ethernet frame's payload (never the header: the frame must still reach
/// its station to show the damage). `at` is a random number.
pub fn corrupt(eth_frame: &mut [u8], at: u64) {
    const ETH: usize = 14;
    if eth_frame.len() <= ETH {
        return;
    }
    let span = (eth_frame.len() - ETH) as u64 * 8;
    let bit = at % span;
    eth_frame[ETH + (bit / 8) as usize] ^= 1 << (bit % 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(delay_ms: u64) -> Verdict {
        Verdict::Pass {
            delay: Duration::from_millis(delay_ms),
            duplicate: false,
            corrupt: false,
        }
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("20ms"), Ok(20_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000));
        assert_eq!(parse_duration("250us"), Ok(250));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("-1ms").is_err());
        assert_eq!(parse_percent("10%"), Ok(100_000));
        assert_eq!(parse_percent("0.5"), Ok(5_000));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert!(parse_rate("10mbps").is_err());
        assert!(parse_rate("nan mbit").is_err());
        // Below the minimum is refused whether or not it rounds to 0; only 0 lifts the limit.
        assert!(parse_rate("1bit").is_err());
        assert!(parse_rate("0.0001bit").is_err());
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("0mbit"), Ok(0));
        assert_eq!(parse_rate("8kbit"), Ok(8_000));
        // A delay too long to hold is refused in the parser, not wrapped to u64::MAX.
        assert!(parse_duration("99999999999999s").is_err());
        assert!(parse_duration("61s").is_err());
        assert_eq!(parse_duration("60s"), Ok(60_000_000));
        assert_eq!(duration(20_000), "20ms");
        assert_eq!(percent(100_000), "10%");
        assert_eq!(percent(5_000), "0.5%");
        assert_eq!(rate(10_000_000), "10mbit");
    }

    #[test]
    fn validates_ranges() {
        let bad = Impairment {
            delay_us: 1000,
            jitter_us: 2000,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = Impairment {
            loss_ppm: PPM + 1,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(Impairment::default().validate().is_ok());
        assert!(Impairment::default().is_noop());
    }

    #[test]
    fn same_seed_same_drops() {
        let cfg = Impairment {
            loss_ppm: 100_000,
            seed: Some(42),
            ..Default::default()
        };
        let now = Instant::now();
        let run = || {
            let mut s = Shaper::new(cfg.clone(), 0);
            (0..2000)
                .map(|_| s.judge(100, now) == Verdict::Drop(DropCause::Loss))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let lost = a.iter().filter(|d| **d).count();
        assert!((150..=250).contains(&lost), "lost {lost} of 2000 at 10%");
        let mut other = Shaper::new(
            Impairment {
                seed: Some(43),
                ..cfg.clone()
            },
            0,
        );
        let b: Vec<_> = (0..2000)
            .map(|_| other.judge(100, now) == Verdict::Drop(DropCause::Loss))
            .collect();
        assert_ne!(a, b, "another seed, another pattern");
    }

    #[test]
    fn delay_jitter_and_reorder() {
        let now = Instant::now();
        let mut s = Shaper::new(
            Impairment {
                delay_us: 20_000,
                ..Default::default()
            },
            1,
        );
        assert_eq!(s.judge(100, now), pass(20));
        let mut s = Shaper::new(
            Impairment {
                delay_us: 20_000,
                jitter_us: 5_000,
                ..Default::default()
            },
            1,
        );
        for _ in 0..1000 {
            let Verdict::Pass { delay, .. } = s.judge(100, now) else {
                panic!("no loss configured");
            };
            assert!((15..=25).contains(&delay.as_millis()), "{delay:?}");
        }
        let mut s = Shaper::new(
            Impairment {
                delay_us: 20_000,
                reorder_ppm: PPM,
                ..Default::default()
            },
            1,
        );
        assert_eq!(s.judge(100, now), pass(0));
    }

    #[test]
    fn rate_spaces_frames_and_tail_drops() {
        let now = Instant::now();
        // 1 Mbit/s: a 1250-byte frame takes 10 ms on the line.
        let mut s = Shaper::new(
            Impairment {
                rate_bps: 1_000_000,
                ..Default::default()
            },
            1,
        );
        assert_eq!(s.judge(1250, now), pass(10));
        assert_eq!(s.judge(1250, now), pass(20));
        // Later, once the line is free, no backlog is left.
        assert_eq!(s.judge(1250, now + Duration::from_secs(1)), pass(10));
        let mut drops = 0;
        for _ in 0..20 {
            if s.judge(1250, now + Duration::from_secs(2)) == Verdict::Drop(DropCause::Queue) {
                drops += 1;
            }
        }
        // 100 ms of backlog fits about 11 frames of 10 ms.
        assert!((8..=10).contains(&drops), "{drops} tail drops");
    }

    #[test]
    fn down_and_blocks() {
        let link = Link::default();
        assert!(!link.is_active());
        link.configure(
            Some(&Impairment {
                down: true,
                ..Default::default()
            }),
            vec![],
            0,
            true,
        );
        assert!(link.is_active());
        assert_eq!(
            link.judge_egress(1, 100, Instant::now()),
            Verdict::Drop(DropCause::Down)
        );
        link.configure(None, vec![7], 0, false);
        assert!(link.is_active() && !link.ingress_active());
        assert_eq!(
            link.judge_egress(7, 100, Instant::now()),
            Verdict::Drop(DropCause::Blocked)
        );
        assert_eq!(link.judge_egress(8, 100, Instant::now()), pass(0));
        link.configure(None, vec![], 0, false);
        assert!(!link.is_active());
    }

    #[test]
    fn corrupts_one_payload_bit() {
        let mut frame = vec![0u8; 60];
        corrupt(&mut frame, 12345);
        assert!(frame[..14].iter().all(|b| *b == 0));
        assert_eq!(frame.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    }
}
