//! The ID mapping of a rootless daemon's user namespace: the user becomes root inside, plus the
//! user's subordinate range from /etc/subuid and /etc/subgid when there is one (mapped through
//! the setuid helpers newuidmap/newgidmap, as rootless Podman and rootlesskit do), or the
//! single ID otherwise (written directly, which the kernel allows for one's own ID).

use std::path::Path;
use std::process::Command;

use crate::error::{Context, Error, Result};

/// A subordinate ID range: `count` IDs from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The first range of /etc/subuid or /etc/subgid text (`NAME_OR_ID:START:COUNT` lines) that
/// belongs to the user named `name` or numbered `id`.
pub fn find_range(text: &str, name: Option<&str>, id: u32) -> Option<SubRange> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut f = line.split(':');
            let owner = f.next()?;
            let start = f.next()?.trim().parse().ok()?;
            let count: u32 = f.next()?.trim().parse().ok()?;
            let mine = Some(owner) == name || owner.parse::<u32>().ok() == Some(id);
            (mine && count > 0).then_some(SubRange { start, count })
        })
        .next()
}

/// How the user and group IDs of the holder's namespace are mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The user (and group) alone, as root.
    Single,
    /// Root is the user; 1..=count are the subordinate ranges.
    Subordinate { uids: SubRange, gids: SubRange },
}

impl Mapping {
    /// The mapping for the calling user: subordinate ranges when both files list one and the
    /// helpers are installed.
    pub fn for_current_user() -> Mapping {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name);
        let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .ok()
            .flatten()
            .map(|g| g.name);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let uids = find_range(&read("/etc/subuid"), name.as_deref(), uid);
        // newgidmap looks the subgid range up by user name (or uid), not by group.
        let gids = find_range(&read("/etc/subgid"), name.as_deref(), uid)
            .or_else(|| find_range(&read("/etc/subgid"), group.as_deref(), gid));
        match (uids, gids, helper("newuidmap"), helper("newgidmap")) {
            (Some(uids), Some(gids), Some(_), Some(_)) => Mapping::Subordinate { uids, gids },
            _ => Mapping::Single,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Mapping::Single => "single ID (no /etc/subuid range or no newuidmap)".into(),
            Mapping::Subordinate { uids, gids } => format!(
                "subordinate ranges uid {}+{} gid {}+{} (newuidmap)",
                uids.start, uids.count, gids.start, gids.count
            ),
        }
    }

    /// Write the maps of process `pid`, which has just made its user namespace.
    pub fn apply(&self, pid: i32) -> Result<()> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        match self {
            Mapping::Single => {
                let proc = Path::new("/proc").join(pid.to_string());
                // Unprivileged gid maps need setgroups off first (CVE-2014-8989).
                write_map(&proc.join("setgroups"), "deny")?;
                write_map(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write_map(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            Mapping::Subordinate { uids, gids } => {
                run_helper("newuidmap", pid, uid, *uids)?;
                run_helper("newgidmap", pid, gid, *gids)
            }
        }
    }
}

fn write_map(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).context(|| format!("write {}", path.display()))
}

/// The helper's path, if it is installed.
fn helper(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_helper(name: &str, pid: i32, id: u32, range: SubRange) -> Result<()> {
    let path = helper(name).ok_or_else(|| Error::invalid(format!("{name} is not installed")))?;
    let out = Command::new(&path)
        .args([
            pid.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .output()
        .context(|| format!("run {}", path.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{name} refused to map the daemon's user namespace ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "# comment\nalice:100000:65536\n1001:200000:1000\nbob:300000:0\n";

    #[test]
    fn finds_ranges_by_name_or_id() {
        assert_eq!(
            find_range(SUBUID, Some("alice"), 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_range(SUBUID, Some("carol"), 1001),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(find_range(SUBUID, Some("dave"), 4242), None);
    }

    #[test]
    fn ignores_empty_and_malformed_ranges() {
        assert_eq!(find_range(SUBUID, Some("bob"), 1002), None, "count 0");
        assert_eq!(find_range("eve:x:10\neve:5\n", Some("eve"), 1), None);
        assert_eq!(find_range("", None, 0), None);
    }
}
