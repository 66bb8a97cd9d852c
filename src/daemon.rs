//! `tapnet daemon`: one per state dir. Holds the lock, the PID file and the control socket, runs
//! the datapath, and stops cleanly on SIGINT or SIGTERM.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};

use crate::api::server::PeerPolicy;
use crate::control::controller::Controller;
use crate::control::ipv4net::Ipv4Net;
use crate::datapath::Datapath;
use crate::error::{Context, Error, Result};
use crate::gateway::dns;
use crate::gateway::policy::NatPolicy;
use crate::netns::tap::Offload;
use crate::paths::StateDir;
use crate::rootless::{self, Mode};

pub struct DaemonOptions {
    pub datapath: crate::datapath::Options,
    pub offload: Offload,
    /// Destinations outbound NAT may reach; empty means everywhere.
    pub nat_allow: Vec<Ipv4Net>,
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

/// How long a starting daemon retries a lock that a client is only probing.
const LOCK_RETRY: Duration = Duration::from_secs(1);

/// Take the state dir's lock; fails if another daemon holds it.
fn lock_state_dir(dirs: &StateDir) -> Result<Flock<File>> {
    let deadline = Instant::now() + LOCK_RETRY;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dirs.lock_file())
            .context(|| format!("open {}", dirs.lock_file().display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // A lock on a file that `system reset` unlinked meanwhile guards nothing: the
            // state dir is gone, and this daemon would run in nowhere.
            Ok(lock) if !is_current_lock_file(&lock, dirs) => {
                return Err(Error::conflict(format!(
                    "state dir {} was removed while this daemon started",
                    dirs.root().display()
                )));
            }
            Ok(lock) => return Ok(lock),
            // A client that checks whether a daemon lives holds a shared lock for a moment.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => {
                let pid = std::fs::read_to_string(dirs.pid_file()).unwrap_or_default();
                return Err(Error::conflict(format!(
                    "another daemon (pid {}) already runs for state dir {}",
                    pid.trim(),
                    dirs.root().display()
                )));
            }
        }
    }
}

/// Is `lock` the file that the state dir's lock path names now (not one unlinked since)?
fn is_current_lock_file(lock: &Flock<File>, dirs: &StateDir) -> bool {
    match (lock.metadata(), std::fs::metadata(dirs.lock_file())) {
        (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
        _ => false,
    }
}

/// True when no daemon holds the state dir's lock: the last of its threads has exited and its
/// fds (socket, TAPs) are closed. A killed daemon's main thread can be a zombie before that.
/// Probes with a shared lock, so that it never blocks a daemon that starts meanwhile for long.
pub fn lock_is_free(dirs: &StateDir) -> bool {
    let Ok(file) = OpenOptions::new().read(true).open(dirs.lock_file()) else {
        return true;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_ok()
}

/// Create the state dir if needed, private to its owner (0700, or 0710 for `group`) whatever
/// the umask; refuse one that belongs to somebody else. True when this call created it.
pub fn prepare_state_dir(dirs: &StateDir, group: Option<nix::unistd::Gid>) -> Result<bool> {
    let root = dirs.root();
    let existed = root.exists();
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .recursive(true)
        .create(root)
        .context(|| format!("create state dir {}", root.display()))?;
    let meta = std::fs::metadata(root).context(|| format!("inspect {}", root.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::conflict(format!(
            "state dir {} belongs to uid {}, not to you (uid {me}); choose another --state-dir",
            root.display(),
            meta.uid()
        )));
    }
    let mode = if group.is_some() { 0o710 } else { 0o700 };
    if meta.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
            .context(|| format!("restrict {} to mode {mode:o}", root.display()))?;
    }
    if let Some(gid) = group {
        nix::unistd::chown(root, None, Some(gid))
            .context(|| format!("give {} to group {gid}", root.display()))?;
    }
    Ok(!existed)
}

/// Undo a state dir that was made for a daemon which then could not start: everything in it,
/// unless it holds namespace pins (then only the daemon's lock, PID file and socket go, and
/// `system reset` is the way to remove the rest).
pub fn remove_unused_state_dir(dirs: &StateDir) {
    let pin_dirs = dirs.pin_dirs();
    let pins = pin_dirs.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    });
    if pins {
        for file in [dirs.lock_file(), dirs.pid_file(), dirs.socket()] {
            let _ = std::fs::remove_file(file);
        }
        return;
    }
    // The empty pin dirs are bind mounts of themselves (as `ip netns` makes them).
    for dir in &pin_dirs {
        if crate::netns::namespace::is_mount_point(dir) {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(dirs.root());
}

/// Raise the soft limit on open files to the hard limit: every TAP, flow and DNS socket is one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

pub fn run(dirs: StateDir, options: DaemonOptions) -> Result<()> {
    // Nothing the daemon creates is for other users: state.json, the log, the socket.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let created = prepare_state_dir(&dirs, options.group)?;
    // Another daemon owns the dir when this fails: nothing there is ours to remove.
    let lock = lock_state_dir(&dirs)?;
    let result = run_locked(&dirs, options);
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
    raise_fd_limit();
    // Block the stop signals before any thread starts, so all inherit the mask and only the
    // main thread's sigwait sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context(|| "block signals".into())?;
    if let Err(e) = crate::guard::raise_fd_limit() {
        eprintln!("tapnet: cannot raise the open-file limit: {e}");
    }
    let mut pid_file =
        File::create(dirs.pid_file()).context(|| format!("write {}", dirs.pid_file().display()))?;
    writeln!(pid_file, "{}", std::process::id())
        .context(|| format!("write {}", dirs.pid_file().display()))?;

    let result = serve_until_signal(&dirs, &options, mode, &signals);
    let _ = std::fs::remove_file(dirs.socket());
    let _ = std::fs::remove_file(dirs.pid_file());
    result
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
    let policy = NatPolicy::new(options.nat_allow.clone());
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
    dp.stop();
    Ok(())
}
