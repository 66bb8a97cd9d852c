//! The state file: JSON, written atomically (temp file, fsync, rename, fsync of the directory).
//! A truncated or corrupt file stops the daemon with an error naming it; it is never reset. A
//! file that parses is checked field by field as the API checks requests; neither the file nor
//! its temp file is reached through a symbolic link.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::model::State;
use super::nofollow::{self, Dir};
use super::validate;
use crate::error::{Context, Error, Result};

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(path: PathBuf) -> Self {
        Store { path }
    }

    #[cfg(test)]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The saved state, or `None` if there is no state file yet.
    pub fn load(&self) -> Result<Option<State>> {
        let text = match nofollow::read_nofollow(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::invalid(format!(
                    "state file {} is a symbolic link; refusing to start",
                    self.path.display()
                )));
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("read state file {}", self.path.display()),
                    source: e,
                });
            }
        };
        let mut state: State = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!(
                "state file {} is corrupt ({e}); refusing to start. Move it away to start empty, or run `tapnet system reset`",
                self.path.display()
            ))
        })?;
        if state.version != State::VERSION {
            return Err(Error::invalid(format!(
                "state file {} has version {}, this tapnet understands {}",
                self.path.display(),
                state.version,
                State::VERSION
            )));
        }
        validate::load(&mut state).map_err(|e| {
            Error::invalid(format!(
                "state file {}: {e}; refusing to start",
                self.path.display()
            ))
        })?;
        Ok(Some(state))
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let text = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::invalid(format!("serialise state: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let what = || format!("write state file {}", tmp.display());
        let (Some(dir), Some(name)) =
            (self.path.parent(), tmp.file_name().and_then(|n| n.to_str()))
        else {
            return Err(Error::invalid(format!(
                "state file {} has no directory",
                self.path.display()
            )));
        };
        // A new file: whatever had the temp name (a link, say) is removed, not written through.
        let mut file = Dir::open_root(dir)?.create_new(name, 0o600)?;
        file.write_all(&text).context(what)?;
        file.sync_all().context(what)?;
        std::fs::rename(&tmp, &self.path)
            .context(|| format!("replace state file {}", self.path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .context(|| format!("sync {}", dir.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapnet-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trips_and_refuses_corruption() {
        let dir = temp_dir("rt");
        let store = Store::new(dir.join("state.json"));
        assert!(store.load().unwrap().is_none());
        let state = State {
            version: State::VERSION,
            ..State::default()
        };
        store.save(&state).unwrap();
        assert!(store.load().unwrap().is_some());
        let full = std::fs::read(store.path()).unwrap();
        std::fs::write(store.path(), &full[..full.len() / 2]).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("corrupt"),
            "{err}"
        );
        // Refusing must not touch the file.
        assert_eq!(
            std::fs::read(store.path()).unwrap(),
            &full[..full.len() / 2]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
