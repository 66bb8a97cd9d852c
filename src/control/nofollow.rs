//! Files under the state dir, reached without following symbolic links: a link planted in the
//! state dir (`etc/NAME/hosts -> /elsewhere`) must never make the daemon write outside it.
//! Each directory is opened relative to its parent with `O_NOFOLLOW`, so no component can be
//! swapped for a link between a check and the use.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};

/// A directory opened without following links, with the path it was reached by (for errors).
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// The state dir itself: given by the administrator, so it may be reached through links.
    pub fn open_root(root: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Error::Sys {
            context: format!("open state dir {}", root.display()),
            errno,
        })?;
        Ok(Dir {
            fd,
            path: root.to_path_buf(),
        })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name` (one plain name), made with `mode` if missing and a mode is
    /// given. A link there is refused, not followed.
    pub fn subdir(&self, name: &str, mode: Option<u32>) -> Result<Dir> {
        let path = self.path.join(name);
        plain_name(name, &path)?;
        if let Some(mode) = mode {
            match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => {
                    return Err(Error::Sys {
                        context: format!("create {}", path.display()),
                        errno,
                    });
                }
            }
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Dir { fd, path }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(Error::invalid(format!(
                "refusing to use {}: it is not a directory (a symbolic link?)",
                path.display()
            ))),
            Err(errno) => Err(Error::Sys {
                context: format!("open {}", path.display()),
                errno,
            }),
        }
    }

    /// Write `text` to the file `name`, in place when it is a regular file with no other
    /// links (a bind mount of it sees the new text); anything else there, a symbolic link or
    /// a hard link to a file elsewhere, is replaced by a new file, never written through.
    pub fn write_in_place(&self, name: &str, text: &[u8], mode: u32) -> Result<()> {
        let path = self.path.join(name);
        plain_name(name, &path)?;
        let sys = |errno| Error::Sys {
            context: format!("write {}", path.display()),
            errno,
        };
        // O_NONBLOCK: a FIFO planted there must not hang the daemon.
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(mode);
        // Twice at most: once as found, once after replacing what was there.
        for _ in 0..2 {
            let fd = match openat(&self.fd, name, flags, mode) {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENXIO) => {
                    self.unlink(name, &path)?;
                    continue;
                }
                Err(errno) => return Err(sys(errno)),
            };
            let st = fstat(&fd).map_err(sys)?;
            let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
            if !regular || st.st_nlink != 1 {
                drop(fd);
                self.unlink(name, &path)?;
                continue;
            }
            let file = File::from(fd);
            if st.st_mode & 0o7777 != mode.bits() {
                nix::sys::stat::fchmod(&file, mode).map_err(sys)?;
            }
            // Unchanged (a restarted daemon refreshing every sandbox's files): left alone. A
            // truncate and write costs far more than the read: ext4 flushes a file truncated
            // to zero when it is closed.
            let mut current = Vec::with_capacity(text.len() + 1);
            if (&file)
                .take(text.len() as u64 + 1)
                .read_to_end(&mut current)
                .is_ok_and(|_| current == text)
            {
                return Ok(());
            }
            file.set_len(0)
                .and_then(|_| file.write_all_at(text, 0))
                .map_err(|e| Error::Io {
                    context: format!("write {}", path.display()),
                    source: e,
                })?;
            return Ok(());
        }
        Err(Error::conflict(format!(
            "write {}: it keeps being replaced by something other than a regular file",
            path.display()
        )))
    }

    /// Remove `name` and everything under it; a link there is removed, not followed.
    pub fn remove_all(&self, name: &str) -> Result<()> {
        let path = self.path.join(name);
        plain_name(name, &path)?;
        // The directory's descriptor pins the path walked so far; std removes the rest
        // without following links.
        let through_fd = PathBuf::from(format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ));
        match std::fs::remove_dir_all(&through_fd) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!("remove {}", path.display()),
                source: e,
            }),
        }
    }

    /// Create `name` anew (`O_EXCL`), after removing whatever had the name.
    pub fn create_new(&self, name: &str, mode: u32) -> Result<File> {
        let path = self.path.join(name);
        plain_name(name, &path)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => {
                return Err(Error::Sys {
                    context: format!("remove {}", path.display()),
                    errno,
                });
            }
        }
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd =
            openat(&self.fd, name, flags, Mode::from_bits_truncate(mode)).map_err(|errno| {
                Error::Sys {
                    context: format!("create {}", path.display()),
                    errno,
                }
            })?;
        Ok(File::from(fd))
    }

    fn unlink(&self, name: &str, path: &Path) -> Result<()> {
        eprintln!(
            "tapnet: {} is not a regular file of its own (a link?): replacing it",
            path.display()
        );
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(Error::Sys {
                context: format!("replace {}", path.display()),
                errno,
            }),
        }
    }
}

/// Read a file's bytes without following a link at its last component.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Names are single components: no separators, no `.` or `..`.
fn plain_name(name: &str, path: &Path) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::invalid(format!(
            "refusing {}: {name:?} is not a plain file name",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapnet-nofollow-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn links_are_replaced_never_written_through() {
        let root = temp_dir("links");
        let victim = root.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        let dir = Dir::open_root(&state)
            .unwrap()
            .subdir("etc", Some(0o755))
            .unwrap();
        // A symbolic link and a hard link to the victim, and a dangling link.
        std::os::unix::fs::symlink(&victim, dir.path().join("hosts")).unwrap();
        std::fs::hard_link(&victim, dir.path().join("hostname")).unwrap();
        std::os::unix::fs::symlink(root.join("new"), dir.path().join("resolv.conf")).unwrap();
        for name in ["hosts", "hostname", "resolv.conf"] {
            dir.write_in_place(name, b"mine\n", 0o644).unwrap();
            let p = dir.path().join(name);
            assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file());
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "mine\n");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!root.join("new").exists());
        // A regular file is rewritten in place: same inode.
        let p = dir.path().join("hosts");
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        dir.write_in_place("hosts", b"again\n", 0o644).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap()),
            ino
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_linked_directory_is_refused_with_its_name() {
        let root = temp_dir("dirs");
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join("etc")).unwrap();
        let err = Dir::open_root(&state)
            .unwrap()
            .subdir("etc", Some(0o755))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("etc") && err.contains("not a directory"),
            "{err}"
        );
        let err = Dir::open_root(&state)
            .unwrap()
            .subdir("../x", Some(0o755))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("plain file name"), "{err}");
        // Removing under a linked directory removes nothing there.
        std::fs::create_dir(elsewhere.join("a")).unwrap();
        let root_dir = Dir::open_root(&state).unwrap();
        assert!(root_dir.subdir("etc", None).is_err());
        std::fs::remove_file(state.join("etc")).unwrap();
        std::fs::create_dir(state.join("etc")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join("etc/b")).unwrap();
        let etc = root_dir.subdir("etc", None).unwrap();
        etc.remove_all("b").unwrap();
        assert!(
            elsewhere.join("a").is_dir(),
            "the link's target is untouched"
        );
        assert!(std::fs::symlink_metadata(state.join("etc/b")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
