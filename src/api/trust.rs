//! Which daemon a client may talk to: only its own user's, or root's. A client sends names,
//! addresses and commands, so a socket planted by another user (say, in a state dir renamed
//! under a world-writable parent) must not receive them. Checked on the state dir and the
//! socket before connecting, and on the peer's credentials (SO_PEERCRED) before anything is
//! sent, which no file trick can fake.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::{Error, Result};

/// May a client running as `me` trust something owned by `owner`?
pub fn trusted_uid(owner: u32, me: u32) -> bool {
    owner == me || owner == 0
}

/// Refuse `path` (the state dir, or its socket) when another user owns it. A path that does
/// not exist yet is fine: the client makes it.
pub fn check_owner(path: &Path, what: &str) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                context: format!("inspect {what} {}", path.display()),
                source: e,
            });
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if trusted_uid(meta.uid(), me) {
        Ok(())
    } else {
        Err(Error::conflict(format!(
            "{what} {} belongs to uid {}, not to you (uid {me}) or root: refusing to talk to \
             a daemon there; check who made it, or choose another --state-dir",
            path.display(),
            meta.uid()
        )))
    }
}

/// The PID of the daemon on the other end of `stream`, once its user is checked.
pub fn check_peer(stream: &UnixStream, socket: &Path) -> Result<i32> {
    use nix::sys::socket::{getsockopt, sockopt};
    let cred = getsockopt(stream, sockopt::PeerCredentials).map_err(|errno| Error::Sys {
        context: format!("read the credentials of the daemon on {}", socket.display()),
        errno,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    if trusted_uid(cred.uid(), me) {
        Ok(cred.pid())
    } else {
        Err(Error::conflict(format!(
            "the daemon on {} runs as uid {} (pid {}), not as you (uid {me}) or root: \
             refusing to send it anything",
            socket.display(),
            cred.uid(),
            cred.pid()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ones_own_user_and_root_are_trusted() {
        assert!(trusted_uid(1000, 1000));
        assert!(trusted_uid(0, 1000));
        assert!(trusted_uid(0, 0));
        assert!(!trusted_uid(65534, 0), "root does not trust nobody");
        assert!(!trusted_uid(1001, 1000));
    }

    #[test]
    fn a_missing_path_is_fine_and_ones_own_is_trusted() {
        let dir = std::env::temp_dir().join(format!("tapnet-trust-{}", std::process::id()));
        assert!(check_owner(&dir, "state dir").is_ok());
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check_owner(&dir, "state dir").is_ok());
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(check_peer(&a, &dir).unwrap(), std::process::id() as i32);
        std::fs::remove_dir(&dir).unwrap();
    }
}
