//! The state on disk: a snapshot (`state.json`) and a journal of the commits since
//! (`state.journal`, see `journal.rs`). A commit appends one line with what it changed and
//! fsyncs it, so its cost does not grow with the number of sandboxes; when the journal has
//! grown past the snapshot's size (and at a clean stop, and at a start without a snapshot of
//! this version) a new snapshot is written atomically (temp file, fsync, rename, fsync of the directory) and the journal
//! started again. `generation` ties the journal to its snapshot: a crash between the two
//! leaves a journal of the old generation, which the new snapshot already holds.
//!
//! A truncated or corrupt snapshot, or a damaged journal line before the last, stops the daemon
//! with an error naming the file; it is never reset. A last journal line cut short by a crash
//! is a commit that never finished and is dropped. A state that loads is checked field by field
//! as the API checks requests; no file is reached through a symbolic link.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::journal::{self, Op, Put, Touched};
use super::model::State;
use super::nofollow::{self, Dir};
use super::validate;
use crate::error::{Context, Error, Result};

/// The journal is compacted once it is this long, or as long as the snapshot if that is more.
const MIN_COMPACT_BYTES: u64 = 4 << 20;

pub struct Store {
    path: PathBuf,
    journal_path: PathBuf,
    /// What the files hold: the state as of the last commit written.
    saved: State,
    /// The journal, open for appending, and its length (whole lines).
    journal: Option<File>,
    journal_len: u64,
    snapshot_len: u64,
    /// `MIN_COMPACT_BYTES`, smaller in tests.
    min_compact: u64,
    /// After a load: the length of the journal's whole lines, when appending may go on there
    /// (the snapshot is of this version and the journal of its generation).
    resume_at: Option<u64>,
}

impl Store {
    pub fn new(path: PathBuf) -> Self {
        Store {
            journal_path: path.with_extension("journal"),
            path,
            saved: State::default(),
            journal: None,
            journal_len: 0,
            snapshot_len: 0,
            min_compact: MIN_COMPACT_BYTES,
            resume_at: None,
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The state as the files hold it (`system export` prints it in the snapshot's format).
    pub fn saved(&self) -> &State {
        &self.saved
    }

    /// The saved state, or `None` if there is no state file yet. Nothing is written: call
    /// `open` once the state is taken.
    pub fn load(&mut self) -> Result<Option<State>> {
        let Some(text) = read_bytes(&self.path, "state file")? else {
            return Ok(None);
        };
        let mut state: State = serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(format!(
                "state file {} is corrupt ({e}); refusing to start. Move it away to start empty, or run `tapnet system reset`",
                self.path.display()
            ))
        })?;
        // Version 1 had no journal: its state file is the whole state.
        if state.version != State::VERSION && state.version != 1 {
            return Err(Error::invalid(format!(
                "state file {} has version {}, this tapnet understands {}",
                self.path.display(),
                state.version,
                State::VERSION
            )));
        }
        let journal = read_bytes(&self.journal_path, "state journal")?;
        let replay = journal::read(journal.as_deref().unwrap_or_default(), state.generation)
            .map_err(|e| {
            Error::invalid(format!(
                "state journal {} is corrupt at {e}; refusing to start. Move it away to start from {} alone",
                self.journal_path.display(),
                self.path.display()
            ))
        })?;
        let current = state.version == State::VERSION && !replay.stale && journal.is_some();
        self.resume_at = current.then_some(replay.good_len as u64);
        journal::replay(&mut state, replay.batches.into_iter().flat_map(|b| b.ops));
        state.version = State::VERSION;
        validate::load(&mut state).map_err(|e| {
            Error::invalid(format!(
                "state file {}: {e}; refusing to start",
                self.path.display()
            ))
        })?;
        self.snapshot_len = text.len() as u64;
        self.saved = state.clone();
        Ok(Some(state))
    }

    /// Be ready to write after `load` (or with `state` made anew): go on appending to the
    /// journal that was loaded, a commit cut short by a crash cut off first, so that a restart
    /// after `kill -9` does not rewrite the whole state; a new snapshot where there is none, or
    /// one of the version before, or a stale journal.
    pub fn open(&mut self, state: &State) -> Result<()> {
        let Some(len) = self.resume_at.take() else {
            return self.compact(state);
        };
        let what = || format!("open state journal {}", self.journal_path.display());
        let file = open_append(&self.journal_path)?;
        let on_disk = file.metadata().context(what)?.len();
        if on_disk > len {
            file.set_len(len)
                .and_then(|()| file.sync_data())
                .context(what)?;
        }
        self.journal = Some(file);
        self.journal_len = len;
        Ok(())
    }

    /// Write what changed since the last commit: a journal line, or a new snapshot when the
    /// journal has grown past it (or the change cannot be said as a line). Says which networks
    /// the change concerns (`journal::networks_touched`; `None`: any).
    pub fn save(&mut self, state: &State) -> Result<Option<Touched>> {
        let Some(ops) = journal::changes(&self.saved, state) else {
            return self.compact(state).map(|()| None);
        };
        if ops.is_empty() {
            return Ok(Some(Touched {
                sandboxes: Some(Vec::new()),
                ..Touched::default()
            }));
        }
        let line = journal::line(self.saved.generation, &ops)
            .map_err(|e| Error::invalid(format!("serialise state change: {e}")))?;
        let limit = self.min_compact.max(self.snapshot_len);
        if self.journal.is_none() || self.journal_len + line.len() as u64 > limit {
            return self.compact(state).map(|()| None);
        }
        self.append(&line)?;
        let touched = journal::networks_touched(&self.saved, &ops);
        // A sandbox put takes the state's own sandbox, shared (the next diff compares their
        // pointers), rather than a copy made from the op; the rest is applied.
        for op in ops {
            match op {
                Op::Put(Put::Sandbox(sb)) => {
                    if let Some(shared) = state.sandboxes.get(&sb.name) {
                        journal::put_sandbox(&mut self.saved.sandboxes, shared.clone());
                    }
                }
                op => journal::apply(&mut self.saved, op),
            }
        }
        Ok(touched)
    }

    fn append(&mut self, line: &[u8]) -> Result<()> {
        let what = || format!("append to state journal {}", self.journal_path.display());
        let Some(file) = self.journal.as_mut() else {
            return Err(Error::invalid(what()));
        };
        let written = file.write_all(line).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Nothing half written may stay before the next line: cut it off, or, if even that
            // fails, stop appending (the next commit writes a snapshot).
            if file.set_len(self.journal_len).is_err() {
                self.journal = None;
            }
            return Err(Error::Io {
                context: what(),
                source: e,
            });
        }
        self.journal_len += line.len() as u64;
        Ok(())
    }

    /// Write what was committed as a new snapshot, with an empty journal after it.
    pub fn checkpoint(&mut self) -> Result<()> {
        let saved = self.saved.clone();
        self.compact(&saved)
    }

    /// Write `state` as a new snapshot (the next generation) and start an empty journal.
    pub fn compact(&mut self, state: &State) -> Result<()> {
        let mut next = state.clone();
        next.version = State::VERSION;
        next.generation = self.saved.generation.wrapping_add(1);
        let text = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::invalid(format!("serialise state: {e}")))?;
        let dir = self.path.parent().ok_or_else(|| {
            Error::invalid(format!(
                "state file {} has no directory",
                self.path.display()
            ))
        })?;
        replace_file(dir, &self.path, &text)?;
        self.saved = next;
        self.snapshot_len = text.len() as u64;
        // From here the old journal is stale (another generation) until it is replaced.
        self.journal = None;
        replace_file(dir, &self.journal_path, b"")?;
        self.journal = Some(open_append(&self.journal_path)?);
        self.journal_len = 0;
        Ok(())
    }
}

/// The file's bytes, or `None` if it does not exist; a link is refused. (Bytes, not text: a
/// journal line cut short may end inside a character.)
fn read_bytes(path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
    match nofollow::read_nofollow(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::invalid(format!(
            "{what} {} is a symbolic link; refusing to start",
            path.display()
        ))),
        Err(e) => Err(Error::Io {
            context: format!("read {what} {}", path.display()),
            source: e,
        }),
    }
}

/// Replace `path` (in `dir`) with `text` atomically: a new temp file, fsync, rename, fsync of
/// the directory.
fn replace_file(dir: &Path, path: &Path, text: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
    ));
    let what = || format!("write {}", tmp.display());
    let name = tmp
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("bad state path {}", tmp.display())))?;
    // A new file: whatever had the temp name (a link, say) is removed, not written through.
    let mut file = Dir::open_root(dir)?.create_new(name, 0o600)?;
    file.write_all(text).context(what)?;
    file.sync_all().context(what)?;
    std::fs::rename(&tmp, path).context(|| format!("replace {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("sync {}", dir.display()))?;
    Ok(())
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .context(|| format!("open state journal {}", path.display()))
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

    fn with_sandboxes(n: usize) -> State {
        let mut state = crate::control::validate::tests::world();
        let template = (*state.sandboxes[0]).clone();
        state.sandboxes.clear();
        for i in 0..n {
            let mut sb = template.clone();
            sb.name = format!("s{i}");
            sb.hostname = sb.name.clone();
            sb.id = format!("sb{i}");
            sb.ports.clear();
            let ep = &mut sb.endpoints[0];
            ep.id = format!("ep{i}");
            ep.ipv4 = Some(std::net::Ipv4Addr::new(10, 61, 0, 2 + i as u8));
            ep.mac = format!("0a:58:0a:3d:00:{:02x}", 2 + i).parse().ok();
            ep.aliases.clear();
            state.sandboxes.push(std::sync::Arc::new(sb));
        }
        state
    }

    fn names(state: &State) -> Vec<String> {
        state.sandboxes.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn round_trips_and_refuses_corruption() {
        let dir = temp_dir("rt");
        let mut store = Store::new(dir.join("state.json"));
        assert!(store.load().unwrap().is_none());
        let state = State {
            version: State::VERSION,
            ..State::default()
        };
        store.compact(&state).unwrap();
        assert!(Store::new(dir.join("state.json")).load().unwrap().is_some());
        let full = std::fs::read(store.path()).unwrap();
        std::fs::write(store.path(), &full[..full.len() / 2]).unwrap();
        let err = Store::new(dir.join("state.json"))
            .load()
            .unwrap_err()
            .to_string();
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

    #[test]
    fn commits_go_to_the_journal_and_load_back() {
        let dir = temp_dir("journal");
        let path = dir.join("state.json");
        let mut store = Store::new(path.clone());
        let mut state = with_sandboxes(3);
        store.compact(&state).unwrap();
        let snapshot = std::fs::read(&path).unwrap();
        state.sandboxes.remove(1);
        store.save(&state).unwrap();
        let more = with_sandboxes(5);
        state.sandboxes.extend(more.sandboxes[3..].iter().cloned());
        store.save(&state).unwrap();
        // What was committed shares the state's sandboxes (the next diff compares pointers);
        // one the state changes is its own copy, and the diff finds it.
        let shared = |store: &Store, state: &State| {
            (store.saved().sandboxes.iter().zip(&state.sandboxes))
                .filter(|(a, b)| std::sync::Arc::ptr_eq(a, b))
                .count()
        };
        assert_eq!(shared(&store, &state), 4);
        state.sandboxes.edit(0, |sb| sb.hostname = "changed".into());
        assert_eq!(shared(&store, &state), 3);
        assert_eq!(
            journal::changes(store.saved(), &state).map(|ops| ops.len()),
            Some(1)
        );
        state.sandboxes.edit(0, |sb| sb.hostname = "s0".into());
        assert_eq!(
            journal::changes(store.saved(), &state).map(|ops| ops.len()),
            Some(0)
        );
        // The snapshot was not rewritten; the journal has the two commits.
        assert_eq!(std::fs::read(&path).unwrap(), snapshot);
        let journal = std::fs::read(dir.join("state.journal")).unwrap();
        assert_eq!(journal.iter().filter(|&&b| b == b'\n').count(), 2);
        let loaded = Store::new(path.clone()).load().unwrap().unwrap();
        assert_eq!(names(&loaded), ["s0", "s2", "s3", "s4"]);
        // A commit cut short by a crash is dropped whole; the ones before stay.
        std::fs::write(dir.join("state.journal"), &journal[..journal.len() - 7]).unwrap();
        let loaded = Store::new(path.clone()).load().unwrap().unwrap();
        assert_eq!(names(&loaded), ["s0", "s2"]);
        // Damage before the last line is corruption, named.
        let mut bad = journal.clone();
        bad[3] = b'#';
        std::fs::write(dir.join("state.journal"), &bad).unwrap();
        let err = Store::new(path.clone()).load().unwrap_err().to_string();
        assert!(
            err.contains("state.journal") && err.contains("line 1"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_restart_appends_after_the_loaded_journal_with_its_torn_line_cut_off() {
        let dir = temp_dir("resume");
        let path = dir.join("state.json");
        let mut store = Store::new(path.clone());
        let mut state = with_sandboxes(4);
        store.compact(&state).unwrap();
        let snapshot = std::fs::read(&path).unwrap();
        state.sandboxes.pop();
        store.save(&state).unwrap();
        state.sandboxes.pop();
        store.save(&state).unwrap();
        let journal = std::fs::read(dir.join("state.journal")).unwrap();
        // A kill -9 cut the second commit short.
        std::fs::write(dir.join("state.journal"), &journal[..journal.len() - 5]).unwrap();
        let mut store = Store::new(path.clone());
        let mut state = store.load().unwrap().unwrap();
        assert_eq!(names(&state), ["s0", "s1", "s2"]);
        store.open(&state).unwrap();
        state.sandboxes.remove(0);
        store.save(&state).unwrap();
        // No new snapshot: the commit went after the first line, the torn one gone.
        assert_eq!(std::fs::read(&path).unwrap(), snapshot);
        let loaded = Store::new(path.clone()).load().unwrap().unwrap();
        assert_eq!(names(&loaded), ["s1", "s2"]);
        // The positive control: a state file of the version before is written anew.
        let mut v1 = serde_json::to_value(with_sandboxes(1)).unwrap();
        v1["version"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&v1).unwrap()).unwrap();
        let mut store = Store::new(path.clone());
        let state = store.load().unwrap().unwrap();
        store.open(&state).unwrap();
        assert_ne!(
            std::fs::read(&path).unwrap(),
            serde_json::to_vec(&v1).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_snapshot_makes_the_old_journal_stale() {
        let dir = temp_dir("stale");
        let path = dir.join("state.json");
        let mut store = Store::new(path.clone());
        let mut state = with_sandboxes(2);
        store.compact(&state).unwrap();
        state.sandboxes.pop();
        store.save(&state).unwrap();
        let old_journal = std::fs::read(dir.join("state.journal")).unwrap();
        assert!(!old_journal.is_empty());
        store.checkpoint().unwrap();
        assert!(std::fs::read(dir.join("state.journal")).unwrap().is_empty());
        // A crash after the snapshot's rename, before the journal's: the old journal is of
        // the generation before and must not be replayed (its del would be applied twice;
        // a put would undo later commits).
        std::fs::write(dir.join("state.journal"), &old_journal).unwrap();
        let loaded = Store::new(path.clone()).load().unwrap().unwrap();
        assert_eq!(names(&loaded), ["s0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_state_file_is_migrated() {
        let dir = temp_dir("v1");
        let path = dir.join("state.json");
        let mut v1 = serde_json::to_value(with_sandboxes(2)).unwrap();
        v1["version"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&v1).unwrap()).unwrap();
        let mut store = Store::new(path.clone());
        let state = store.load().unwrap().unwrap();
        assert_eq!(names(&state), ["s0", "s1"]);
        store.compact(&state).unwrap();
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(text["version"], State::VERSION);
        // A version this tapnet does not know is refused.
        let mut v9 = text.clone();
        v9["version"] = 9.into();
        std::fs::write(&path, serde_json::to_vec(&v9).unwrap()).unwrap();
        let err = Store::new(path).load().unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_journal_is_compacted() {
        let dir = temp_dir("compact");
        let path = dir.join("state.json");
        let mut store = Store::new(path.clone());
        store.min_compact = 16 << 10;
        let mut state = with_sandboxes(2);
        store.compact(&state).unwrap();
        let generation = store.saved().generation;
        // Commit after commit until the journal passes its limit.
        let mut commits = 0;
        while store.saved().generation == generation {
            state
                .sandboxes
                .edit(0, |sb| sb.hostname = format!("h{commits}"));
            store.save(&state).unwrap();
            commits += 1;
            assert!(commits < 10_000, "never compacted");
        }
        assert!(commits > 10, "compacted after {commits}");
        assert!(std::fs::metadata(dir.join("state.journal")).unwrap().len() == 0);
        let loaded = Store::new(path).load().unwrap().unwrap();
        assert_eq!(loaded.sandboxes[0].hostname, state.sandboxes[0].hostname);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
