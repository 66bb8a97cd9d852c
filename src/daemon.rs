//! `tapnet daemon`: one per state dir. Holds the lock, the PID file and the control socket, runs
//! the datapath, and stops cleanly on SIGINT or SIGTERM.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use crate::api::server::PeerPolicy;
use crate::control::controller::Controller;
use crate::datapath::Datapath;
use crate::error::{Context, Result};
use crate::gateway::dns;
use crate::gateway::policy::NatPolicy;
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use crate::rootless::{self, Mode};
use crate::state_dir::{lock_state_dir, prepare_state_dir, remove_unused_state_dir};
use crate::wire::Ipv4Net;

pub struct DaemonOptions {
    pub datapath: crate::datapath::Options,
    pub offload: Offload,
    /// Destinations outbound NAT may reach, per family; both empty means everywhere.
    pub nat_allow: Vec<Ipv4Net>,
    pub nat_allow6: Vec<crate::wire::Ipv6Net>,
    /// Name servers the gateways forward to; empty means those of /etc/resolv.conf.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// A group whose members may use the control socket too (as Docker's `docker` group).
    pub group: Option<nix::unistd::Gid>,
    /// Serve Prometheus metrics here (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    /// The VTEP address of overlay networks that do not name one (`--vtep`).
    pub vtep: Option<std::net::SocketAddr>,
    /// The cluster store (`--store`, `--store-lease`).
    pub store: Option<crate::cluster::StoreOptions>,
}

pub fn run(dirs: StateDir, options: DaemonOptions) -> Result<()> {
    // Nothing the daemon creates is for other users: state.json, the log, the socket.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let created = prepare_state_dir(&dirs, options.group)?;
    // Another daemon owns the dir when this fails: nothing there is ours to remove.
    let lock = lock_state_dir(&dirs)?;
    let result = run_locked(&dirs, options);
    if result.is_err() {
        // A keeper that gave back nothing holds only what this failed start made: it goes.
        // One that did keeps the TAPs for the next start.
        crate::keeper::client::quit_if_nothing_was_kept(&dirs);
    }
    if result.is_err() && created {
        // A daemon that could not start leaves no trace in a state dir it made.
        drop(lock);
        remove_unused_state_dir(&dirs);
    }
    result
}

fn run_locked(dirs: &StateDir, options: DaemonOptions) -> Result<()> {
    let dirs = dirs.clone();
    // Before any thread exists: a rootless daemon joins its holder's namespaces here.
    let mode = rootless::enter(&dirs)?;
    // Before the keeper is forked, so that it has the same limit.
    if let Err(e) = crate::guard::raise_fd_limit() {
        eprintln!("tapnet: cannot raise the open-file limit: {e}");
    }
    // Before any thread exists too: the fd keeper is forked, and gives back the TAPs it kept.
    start_keeper(&dirs);
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

    let result = serve_until_signal(&dirs, &options, mode, &signals);
    let _ = std::fs::remove_file(dirs.socket());
    let _ = std::fs::remove_file(dirs.pid_file());
    result
}

/// Connect to the state dir's fd keeper (starting one) and take back the fds it holds, unless
/// `TAPNET_FD_KEEPER=off`. Without a keeper the daemon works as before: its TAPs die with it.
fn start_keeper(dirs: &StateDir) {
    if std::env::var_os("TAPNET_FD_KEEPER").is_some_and(|v| v == "off") {
        return;
    }
    if let Err(e) = crate::keeper::client::start(dirs) {
        eprintln!("tapnet: no fd keeper ({e}); TAPs will not survive a kill of the daemon");
    }
}

/// Bind the control socket: mode 0600 (0660 and the group's, with `--group`).
fn bind_socket(dirs: &StateDir, group: Option<nix::unistd::Gid>) -> Result<UnixListener> {
    let path = dirs.socket();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).context(|| format!("listen on {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .context(|| format!("restrict {}", path.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(&path, None, Some(gid))
            .context(|| format!("give {} to group {gid}", path.display()))?;
    }
    Ok(listener)
}

fn serve_until_signal(
    dirs: &StateDir,
    options: &DaemonOptions,
    mode: Mode,
    signals: &SigSet,
) -> Result<()> {
    // An unreachable store stops the daemon here, before anything is made.
    let cluster = match (&options.store, options.vtep) {
        (Some(store), Some(vtep)) => Some(crate::cluster::Cluster::start(store, vtep.to_string())?),
        _ => None,
    };
    let dp = Datapath::start(&options.datapath)?;
    let policy = NatPolicy::new(options.nat_allow.clone(), options.nat_allow6.clone());
    let upstreams = if options.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        dns::nameservers_from_resolv_conf(&text, false)
    } else {
        options.dns_upstreams.clone()
    };
    let controller = match Controller::open(
        dirs.clone(),
        dp.clone(),
        options.offload,
        policy,
        upstreams,
        mode,
        options.vtep,
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            dp.stop();
            return Err(e);
        }
    };
    // The restore has claimed the TAPs it re-attached; the keeper's others go.
    crate::keeper::client::forget_unclaimed();
    if let Some((cluster, events)) = cluster
        && let Err(e) = controller.attach_cluster(cluster, events)
    {
        dp.stop();
        return Err(e);
    }
    if let Some(addr) = options.metrics
        && let Err(e) = crate::metrics::start(addr, controller.clone())
    {
        dp.stop();
        return Err(e);
    }
    // Docker plugins the state lists serve again: dockerd does not re-register them.
    controller.serve_plugins();
    let plugins = controller.clone();
    let listener = bind_socket(dirs, options.group)?;
    let peers = PeerPolicy {
        uid: nix::unistd::geteuid().as_raw(),
        gid: options.group.map(|g| g.as_raw()),
    };
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || crate::api::poller::serve(listener, controller, peers))
        .context(|| "spawn API thread".into())?;
    eprintln!(
        "tapnet: daemon {} ({} mode) serving {} with {} datapath threads, {} queue(s) per TAP, \
         offloads {}",
        std::process::id(),
        mode.name(),
        dirs.socket().display(),
        dp.threads(),
        dp.tap_queues(),
        if options.offload == Offload::On {
            "on"
        } else {
            "off"
        }
    );
    eprintln!("tapnet: datapath I/O: {}", options.datapath.io);
    let signal = signals.wait().context(|| "wait for signals".into())?;
    eprintln!("tapnet: {signal:?} received, stopping");
    // Their sockets go with the daemon; the state says to serve them again.
    plugins.stop_plugins();
    plugins.leave_cluster();
    dp.stop();
    plugins.checkpoint();
    // A clean stop removes the TAPs, as it always did: the keeper closes its references and
    // exits (a `kill -9` leaves them to the keeper, for the next daemon).
    crate::keeper::client::quit(dirs);
    Ok(())
}
