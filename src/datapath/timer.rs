//! A worker's wake-up for its next delayed frame: a timerfd in the worker's poll, armed with
//! nanosecond resolution. (mio's poll timeout is in whole milliseconds, rounded up, which would
//! add up to 1 ms to every delay.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub struct Timer {
    fd: OwnedFd,
    /// The deadline the timer is armed for, if any.
    armed: Option<Instant>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: plain syscall; the returned fd is checked and owned below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer { fd, armed: None })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fire at `at` (at once if it has passed); does nothing if already armed for it.
    pub fn arm(&mut self, at: Instant) {
        if self.armed == Some(at) {
            return;
        }
        // A zero it_value would disarm: the earliest is 1 ns from now.
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        let rc = unsafe { libc::timerfd_settime(self.raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.armed = (rc == 0).then_some(at);
    }

    /// After the timer fired: consume its expiry count so that it can fire again.
    pub fn fired(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: count is valid for 8 bytes of writes; the fd is non-blocking.
        let _ = unsafe { libc::read(self.raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.armed = None;
    }
}
