//! Records the git revision of the build for `tapnet version`. Outside a git checkout (a source
//! tarball, `cargo install` from a registry) or without git, the revision is "unknown": the
//! build never fails for want of it.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// True when the package root is the top of a git work tree, so that a copy of the sources
/// inside some other repository does not report that repository's revision.
fn in_own_checkout() -> bool {
    let Some(top) = git(&["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    match (
        std::fs::canonicalize(top),
        manifest_dir.map(std::fs::canonicalize),
    ) {
        (Ok(top), Some(Ok(dir))) => top == dir,
        _ => false,
    }
}

fn main() {
    let revision = in_own_checkout()
        .then(|| git(&["rev-parse", "--short", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TAPNET_GIT_REV={revision}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: a commit changes the branch's ref (loose or packed), a checkout
    // changes HEAD itself. In a worktree HEAD lives in the worktree's git dir, refs in the
    // common one.
    if revision == "unknown" {
        return;
    }
    if let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
    ) {
        let git_dir = PathBuf::from(git_dir);
        let common_dir = PathBuf::from(common_dir);
        let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common_dir.join(head_ref));
        }
        // A path that does not exist would make cargo rerun this script on every build.
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
