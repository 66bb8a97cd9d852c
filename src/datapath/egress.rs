//! Handing a switched frame to its output port, through the port's link impairments when it has
//! any. The plain path is one relaxed load and the `write`; the impaired path is out of line.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::delay::{DelayQueue, Due};
use super::fdb::PortId;
use super::impair::{SplitMix64, Verdict, corrupt};
use super::port::Port;
use crate::wire::VNET_HDR_LEN;

/// Write `frame` (from port `from`) to `port`, through worker `worker`'s queue.
#[inline]
pub fn send(port: &Arc<Port>, worker: usize, from: PortId, frame: &[u8], delayed: &mut DelayQueue) {
    if port.link.is_active() {
        send_impaired(port, worker, from, frame, delayed);
    } else {
        port.send(worker, frame);
    }
}

#[cold]
#[inline(never)]
fn send_impaired(
    port: &Arc<Port>,
    worker: usize,
    from: PortId,
    frame: &[u8],
    delayed: &mut DelayQueue,
) {
    let now = Instant::now();
    let verdict = port
        .link
        .judge_egress(from, frame.len().saturating_sub(VNET_HDR_LEN), now);
    apply(port, from, Due::Send, frame, verdict, now, delayed, |f| {
        port.send(worker, f);
    });
}

/// For a frame entering the switch on `port` with `--both` impairments: true when the link
/// took it (dropped, or held to be switched later); false when it goes on now, as usual.
pub fn hold_ingress(port: &Arc<Port>, frame: &[u8], delayed: &mut DelayQueue) -> bool {
    let now = Instant::now();
    let verdict = port
        .link
        .judge_ingress(frame.len().saturating_sub(VNET_HDR_LEN), now);
    match verdict {
        Verdict::Pass {
            delay,
            duplicate: false,
            corrupt: false,
        } if delay.is_zero() => false,
        _ => {
            apply(
                port,
                port.id,
                Due::Forward,
                frame,
                verdict,
                now,
                delayed,
                |_| {},
            );
            true
        }
    }
}

/// Carry out a verdict: drop (counted), send now with `now_fn`, or queue copies for later.
#[allow(clippy::too_many_arguments)]
fn apply(
    port: &Arc<Port>,
    from: PortId,
    due: Due,
    frame: &[u8],
    verdict: Verdict,
    now: Instant,
    delayed: &mut DelayQueue,
    mut now_fn: impl FnMut(&[u8]),
) {
    let counters = &port.link.counters;
    let Verdict::Pass {
        delay,
        duplicate,
        corrupt: damage,
    } = verdict
    else {
        if let Verdict::Drop(cause) = verdict {
            counters.count_drop(cause);
        }
        return;
    };
    let copies = if duplicate {
        counters.duplicated.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    if delay.is_zero() && !damage && due == Due::Send {
        for _ in 0..copies {
            now_fn(frame);
        }
        return;
    }
    if !delay.is_zero() {
        counters.delayed.fetch_add(1, Ordering::Relaxed);
    }
    let at = now + delay;
    for copy in 0..copies {
        if !delayed.push(at, port, from, due, frame) {
            counters.dropped_overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if damage && copy == 0 {
            let n = counters.corrupted.fetch_add(1, Ordering::Relaxed);
            if let Some(buf) = delayed.last_frame_mut() {
                let header = VNET_HDR_LEN.min(buf.len());
                corrupt(
                    &mut buf[header..],
                    SplitMix64::new(n ^ frame.len() as u64).next_u64(),
                );
            }
        }
    }
}
