//! No thread dies silently. The long-lived threads of the daemon (datapath workers, the aging
//! thread, gateways and their DNS servers) run their body through `guarded`: a panic is caught,
//! logged with the thread's name, and the daemon is asked to stop (SIGTERM to itself, which the
//! main thread's `sigwait` takes as any stop). Why stop rather than restart: a panic is a bug,
//! and the state the thread held (a worker's port table, a gateway's flows) cannot be trusted
//! afterwards; a clean stop closes every TAP, and the next command starts a daemon that finds
//! the namespaces and rewires them. See docs/ARCHITECTURE.md.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Run `body`; if it panics, log which thread died and why, then call `on_panic` with the
/// message. Returns the body's value, or `None` after a panic.
pub fn guarded_with<T>(
    name: &str,
    body: impl FnOnce() -> T,
    on_panic: impl FnOnce(&str),
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => Some(v),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            eprintln!("tapnet: thread {name} panicked: {message}; stopping the daemon");
            on_panic(&message);
            None
        }
    }
}

/// `guarded_with` whose reaction is to stop the daemon.
pub fn guarded<T>(name: &str, body: impl FnOnce() -> T) -> Option<T> {
    guarded_with(name, body, |_| stop_daemon())
}

/// Ask the daemon's main thread to stop, as `kill -TERM` would.
pub fn stop_daemon() {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
}

/// Lock `mutex`, which guards `what`. A poisoned lock means a thread panicked while changing
/// it, so it may be half-changed: that is a bug like any panic, and gets the same answer (the
/// daemon stops; the next command starts one from the saved state). The guard is still
/// returned, so that the caller finishes its frame or step while the stop is under way; code
/// that must not act on half-changed state at all (a new control request) checks
/// `Mutex::is_poisoned` first.
pub fn lock_or_stop<'a, T>(mutex: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    lock_or_react(mutex, || report_poisoned(what))
}

/// `lock_or_stop` with the reaction to a poisoned lock given.
fn lock_or_react<T>(mutex: &Mutex<T>, react: impl FnOnce()) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        react();
        poisoned.into_inner()
    })
}

/// `lock_or_stop` for a read lock.
pub fn read_or_stop<'a, T>(lock: &'a RwLock<T>, what: &str) -> RwLockReadGuard<'a, T> {
    lock.read().unwrap_or_else(|poisoned| {
        report_poisoned(what);
        poisoned.into_inner()
    })
}

/// `lock_or_stop` for a write lock.
pub fn write_or_stop<'a, T>(lock: &'a RwLock<T>, what: &str) -> RwLockWriteGuard<'a, T> {
    lock.write().unwrap_or_else(|poisoned| {
        report_poisoned(what);
        poisoned.into_inner()
    })
}

fn report_poisoned(what: &str) {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        eprintln!(
            "tapnet: {what} was left half-changed by a thread that panicked; stopping the daemon"
        );
    });
    stop_daemon();
}

/// Raise the limit of open files: every sandbox port (a fd per TAP queue, in the daemon and in
/// the fd keeper), NAT flow and published port is an fd, and the default soft limit (often
/// 1024) is far below what the caps of the gateways allow in total. Where allowed (root), the
/// hard limit goes up to the kernel's most (`fs.nr_open`) first: 10,000 sandboxes with two
/// queues each take 20,000 fds, the hard limit some systems set. Returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    if let Some(most) = most.filter(|&m| m > limit.rlim_max) {
        let raised = libc::rlimit {
            rlim_cur: most,
            rlim_max: most,
        };
        // SAFETY: setrlimit reads the struct we own. Without CAP_SYS_RESOURCE (rootless) it
        // fails and the hard limit stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(most);
        }
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panic_is_caught_reported_and_reacted_to() {
        let seen = Cell::new(None::<String>);
        let out: Option<u32> = guarded_with(
            "test-thread",
            || panic!("boom {}", 42),
            |m| seen.set(Some(m.to_string())),
        );
        assert_eq!(out, None);
        assert_eq!(seen.take().as_deref(), Some("boom 42"));
    }

    #[test]
    fn a_normal_return_passes_through_without_reaction() {
        let reacted = Cell::new(false);
        let out = guarded_with("test-thread", || 7, |_| reacted.set(true));
        assert_eq!(out, Some(7));
        assert!(!reacted.get());
    }

    #[test]
    fn a_real_thread_that_panics_reports_through_its_guard() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            guarded_with(
                "worker",
                || panic!("static message"),
                |m| {
                    let _ = tx.send(m.to_string());
                },
            )
        });
        assert_eq!(
            t.join().ok().flatten(),
            None::<()>,
            "joined cleanly, body gave nothing"
        );
        assert_eq!(rx.recv().ok().as_deref(), Some("static message"));
    }

    #[test]
    fn a_lock_poisoned_by_a_panic_is_reacted_to_not_ignored() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let reacted = Cell::new(0);
        *lock_or_react(&mutex, || reacted.set(reacted.get() + 1)) += 1;
        assert_eq!(
            reacted.get(),
            0,
            "positive control: a sound lock is no event"
        );
        let held = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("half-changed");
        })
        .join();
        assert!(mutex.is_poisoned());
        let value = *lock_or_react(&mutex, || reacted.set(reacted.get() + 1));
        assert_eq!(reacted.get(), 1, "the poisoned lock was reacted to");
        assert_eq!(value, 2, "and the caller can finish its step");
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let soft = raise_fd_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        assert_eq!(got, 0);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(soft, limit.rlim_max);
    }
}
