//! Adaptive busy polling. Before a worker sleeps in `epoll_wait` after forwarding frames, it
//! may poll without sleeping for a short window, so that a frame arriving within microseconds
//! (the next packet of a stream, a process's reply) costs neither a wake-up of the worker nor
//! one in the sender's `write`. The window learns from what waiting brought: it opens to cover
//! the gap after which frames arrived while the worker slept, and halves each time spinning
//! found nothing. A worker that forwarded nothing since it last slept does not spin, so an idle
//! daemon uses no CPU.

use std::time::{Duration, Instant};

/// A window shorter than this is not worth a spin: it closes to zero.
const MIN_WINDOW: Duration = Duration::from_micros(4);
/// A poll that returned sooner than this did not sleep (sleeping and being woken costs more
/// here): the frame was already there, and spinning would not have saved anything.
const NO_SLEEP: Duration = Duration::from_micros(10);

#[derive(Debug)]
pub struct Spin {
    max: Duration,
    window: Duration,
}

impl Spin {
    /// `max` bounds every spin; zero disables spinning.
    pub fn new(max: Duration) -> Self {
        Spin {
            max,
            window: Duration::ZERO,
        }
    }

    /// How long to poll without sleeping before the next sleep (what `spin` uses).
    #[cfg(test)]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Spin: call `look` (true when something is ready) without sleeping until something is
    /// ready or the window ends, yielding the CPU between looks, and learn from the outcome.
    /// Returns whether something came; with the window closed, looks not at all.
    pub fn spin<E>(&mut self, mut look: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
        let window = self.window;
        if window.is_zero() {
            return Ok(false);
        }
        let start = Instant::now();
        loop {
            if look()? {
                self.spun(true);
                return Ok(true);
            }
            if start.elapsed() >= window {
                self.spun(false);
                return Ok(false);
            }
            // Let a task waiting for this CPU (often the receiver of what was just
            // forwarded) run first: a spin only takes time nobody else wants.
            std::thread::yield_now();
        }
    }

    /// `spin` over a mio poll (the epoll worker's, a gateway's): poll without waiting until
    /// an event is ready, which is then in `events`.
    pub fn spin_poll(&mut self, poll: &mut mio::Poll, events: &mut mio::Events) -> bool {
        let Ok(caught) = self.spin(|| {
            Ok::<_, std::convert::Infallible>(
                poll.poll(events, Some(Duration::ZERO)).is_ok() && !events.is_empty(),
            )
        });
        caught
    }

    /// A spin ended: `caught` says whether something became ready during it.
    pub fn spun(&mut self, caught: bool) {
        if !caught {
            self.shrink();
        }
    }

    /// The worker slept (after forwarding frames) and was woken by work after `slept`: a
    /// window of twice that would have caught it without sleeping, if it is within `max`. A
    /// poll that returned at once (the reply was already queued) slept not at all: no change.
    pub fn slept(&mut self, slept: Duration) {
        if self.max < MIN_WINDOW || slept < NO_SLEEP {
            return;
        }
        if slept <= self.max {
            self.window = (slept * 2).clamp(MIN_WINDOW, self.max);
        } else {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        self.window /= 2;
        if self.window < MIN_WINDOW {
            self.window = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    #[test]
    fn starts_closed() {
        assert_eq!(Spin::new(MAX).window(), Duration::ZERO);
    }

    #[test]
    fn opens_to_cover_short_gaps_and_caps_at_max() {
        let mut s = Spin::new(MAX);
        s.slept(Duration::from_micros(10));
        assert_eq!(s.window(), Duration::from_micros(20));
        s.slept(Duration::from_micros(40));
        assert_eq!(s.window(), MAX);
        s.slept(Duration::from_micros(10));
        assert_eq!(s.window(), Duration::from_micros(20));
    }

    #[test]
    fn a_poll_that_did_not_sleep_changes_nothing() {
        let mut s = Spin::new(MAX);
        s.slept(Duration::from_micros(9));
        assert_eq!(s.window(), Duration::ZERO);
        s.slept(Duration::from_micros(10));
        s.slept(Duration::from_micros(9));
        assert_eq!(s.window(), Duration::from_micros(20));
    }

    #[test]
    fn long_sleeps_and_empty_spins_close_it() {
        let mut s = Spin::new(MAX);
        s.slept(Duration::from_micros(20));
        assert_eq!(s.window(), Duration::from_micros(40));
        s.spun(true);
        assert_eq!(s.window(), Duration::from_micros(40));
        s.spun(false);
        assert_eq!(s.window(), Duration::from_micros(20));
        s.slept(Duration::from_millis(10));
        assert_eq!(s.window(), Duration::from_micros(10));
        s.spun(false);
        s.spun(false);
        assert_eq!(s.window(), Duration::ZERO);
    }

    #[test]
    fn a_spin_looks_until_something_comes_and_learns_from_it() {
        let mut s = Spin::new(MAX);
        let mut looks = 0;
        assert_eq!(
            s.spin(|| Ok::<_, ()>({
                looks += 1;
                true
            })),
            Ok(false)
        );
        assert_eq!(looks, 0, "a closed window looks not at all");
        s.slept(Duration::from_micros(20));
        assert_eq!(
            s.spin(|| Ok::<_, ()>({
                looks += 1;
                looks == 3
            })),
            Ok(true)
        );
        assert_eq!(looks, 3);
        assert_eq!(
            s.window(),
            Duration::from_micros(40),
            "a catch keeps the window"
        );
        assert_eq!(s.spin(|| Ok::<_, ()>(false)), Ok(false));
        assert_eq!(
            s.window(),
            Duration::from_micros(20),
            "an empty spin halves it"
        );
        assert_eq!(s.spin(|| Err::<bool, _>("failed")), Err("failed"));
    }

    #[test]
    fn zero_max_never_spins() {
        let mut s = Spin::new(Duration::ZERO);
        s.slept(Duration::from_micros(10));
        assert_eq!(s.window(), Duration::ZERO);
        s.slept(Duration::from_micros(3));
        assert_eq!(s.window(), Duration::ZERO);
    }
}
