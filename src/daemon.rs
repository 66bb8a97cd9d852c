//! `tapnet daemon`: one per state dir. Holds the lock, the PID file and the control socket, runs
//! the datapath, and stops cleanly on SIGINT or SIGTERM.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

use crate::api::server;
use crate::control::controller::Controller;
use crate::control::ipv4net::Ipv4Net;
use crate::datapath::Datapath;
use crate::error::{Context, Error, Result};
use crate::gateway::dns;
use crate::gateway::policy::NatPolicy;
use crate::netns::tap::Offload;
use crate::paths::StateDir;

pub struct DaemonOptions {
    pub threads: usize,
    pub offload: Offload,
    /// Destinations outbound NAT may reach; empty means everywhere.
    pub nat_allow: Vec<Ipv4Net>,
    /// Name servers the gateways forward to; empty means those of /etc/resolv.conf.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Serve Prometheus metrics here (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Take the state dir's lock; fails if another daemon holds it.
fn lock_state_dir(dirs: &StateDir) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dirs.lock_file())
        .context(|| format!("open {}", dirs.lock_file().display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        let pid = std::fs::read_to_string(dirs.pid_file()).unwrap_or_default();
        Error::conflict(format!(
            "another daemon (pid {}) already runs for state dir {}",
            pid.trim(),
            dirs.root().display()
        ))
    })
}

/// True when no daemon holds the state dir's lock: the last of its threads has exited and its
/// fds (socket, TAPs) are closed. A killed daemon's main thread can be a zombie before that.
pub fn lock_is_free(dirs: &StateDir) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(dirs.lock_file()) else {
        return true;
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
}

pub fn run(dirs: StateDir, options: DaemonOptions) -> Result<()> {
    std::fs::create_dir_all(dirs.root())
        .context(|| format!("create state dir {}", dirs.root().display()))?;
    let _lock = lock_state_dir(&dirs)?;
    // Block the stop signals before any thread starts, so all inherit the mask and only the
    // main thread's sigwait sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context(|| "block signals".into())?;
    let mut pid_file =
        File::create(dirs.pid_file()).context(|| format!("write {}", dirs.pid_file().display()))?;
    writeln!(pid_file, "{}", std::process::id())
        .context(|| format!("write {}", dirs.pid_file().display()))?;

    let result = serve_until_signal(&dirs, &options, &signals);
    let _ = std::fs::remove_file(dirs.socket());
    let _ = std::fs::remove_file(dirs.pid_file());
    result
}

fn serve_until_signal(dirs: &StateDir, options: &DaemonOptions, signals: &SigSet) -> Result<()> {
    let dp = Datapath::start(options.threads)?;
    let policy = NatPolicy::new(options.nat_allow.clone());
    let upstreams = if options.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        dns::nameservers_from_resolv_conf(&text, false)
    } else {
        options.dns_upstreams.clone()
    };
    let controller =
        match Controller::open(dirs.clone(), dp.clone(), options.offload, policy, upstreams) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                dp.stop();
                return Err(e);
            }
        };
    if let Some(addr) = options.metrics
        && let Err(e) = crate::metrics::start(addr, controller.clone())
    {
        dp.stop();
        return Err(e);
    }
    let _ = std::fs::remove_file(dirs.socket());
    let listener = UnixListener::bind(dirs.socket())
        .context(|| format!("listen on {}", dirs.socket().display()))?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || server::serve(listener, controller))
        .context(|| "spawn API thread".into())?;
    eprintln!(
        "tapnet: daemon {} serving {} with {} datapath threads, offloads {}",
        std::process::id(),
        dirs.socket().display(),
        dp.threads(),
        if options.offload == Offload::On {
            "on"
        } else {
            "off"
        }
    );
    let signal = signals.wait().context(|| "wait for signals".into())?;
    eprintln!("tapnet: {signal:?} received, stopping");
    dp.stop();
    Ok(())
}
