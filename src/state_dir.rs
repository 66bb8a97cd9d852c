//! A state dir's life as daemon and clients share it: made private to its owner, locked by the
//! one daemon that serves it (clients tell a live daemon by the lock, never by the socket), and
//! removed again when a daemon made for it could not start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Error, Result};
use crate::paths::StateDir;

/// How long a starting daemon retries a lock that a client is only probing.
const LOCK_RETRY: Duration = Duration::from_secs(1);

/// Take the state dir's lock; fails if another daemon holds it.
pub fn lock_state_dir(dirs: &StateDir) -> Result<Flock<File>> {
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
