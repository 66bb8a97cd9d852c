//! Tests that need a tool from outside the project (dockerd, podman, etcd, Go and libcni's
//! source) run when it is installed, fail when it is not, and are skipped only when the comma
//! separated `TAPNET_TEST_SKIP` names them: a missing tool can never pass unnoticed. A skip is
//! written to stderr (past libtest's capture) and appended to the file `TAPNET_TEST_SKIP_LOG`
//! names, which scripts/test.sh counts in its summary line.
//!
//! Names for `TAPNET_TEST_SKIP`: `docker` (tests/docker.rs), `podman` (tests/podman.rs), `etcd`
//! (tests/etcd.rs), `libcni` (the libcni test of tests/cni.rs), `busybox` (tests/dhcp.rs).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Something a test needs: an executable found on `PATH`, or (when it holds a `/`) a path
/// that must exist; and the Debian package that provides it (scripts/test.sh installs it).
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub what: &'static str,
    pub package: &'static str,
}

pub const fn need(what: &'static str, package: &'static str) -> Need {
    Need { what, package }
}

/// What `require` does about a test's needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// The line to print and log.
    Skip(String),
    /// The panic message.
    Fail(String),
}

/// The decision, from the needs that are missing and the value of `TAPNET_TEST_SKIP` (if set):
/// no I/O, so it can be tested without touching the process environment.
pub fn decide(test: &str, skip_name: &str, missing: &[Need], skip_list: Option<&str>) -> Decision {
    if missing.is_empty() {
        return Decision::Run;
    }
    let whats: Vec<&str> = missing.iter().map(|n| n.what).collect();
    let whats = whats.join(", ");
    let named = skip_list
        .unwrap_or("")
        .split(',')
        .any(|name| name.trim() == skip_name);
    if named {
        return Decision::Skip(format!(
            "tapnet-test-skip: {test}: {whats} missing (TAPNET_TEST_SKIP={skip_name})"
        ));
    }
    let mut packages: Vec<&str> = Vec::new();
    for need in missing {
        if !packages.contains(&need.package) {
            packages.push(need.package);
        }
    }
    Decision::Fail(format!(
        "{test}: {whats} missing: install {} (scripts/test.sh installs it), or skip this test \
         with TAPNET_TEST_SKIP={skip_name}",
        packages.join(" ")
    ))
}

/// Whether `what` is present: an executable file in a directory of `path` (a `PATH` value), or
/// an existing path when `what` holds a `/`.
pub fn present(what: &str, path: &str) -> bool {
    if what.contains('/') {
        return Path::new(what).exists();
    }
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(what))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The running test's name as libtest shows it, after the test binary's: libtest names each
/// test's thread after the test.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unknown test");
    format!("{}::{name}", env!("CARGO_CRATE_NAME"))
}

/// True when every need is present. Otherwise the test is skipped (false, said on stderr and in
/// `TAPNET_TEST_SKIP_LOG`) if `TAPNET_TEST_SKIP` names `skip_name`, and fails if it does not.
pub fn require(skip_name: &str, needs: &[Need]) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let missing: Vec<Need> = needs
        .iter()
        .filter(|n| !present(n.what, &path))
        .copied()
        .collect();
    let skip_list = std::env::var("TAPNET_TEST_SKIP").ok();
    match decide(&test_name(), skip_name, &missing, skip_list.as_deref()) {
        Decision::Run => true,
        Decision::Skip(line) => {
            // Straight to fd 2: eprintln! would be captured, and shown only if the test failed.
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            if let Some(log) = std::env::var_os("TAPNET_TEST_SKIP_LOG") {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap_or_else(|e| panic!("open TAPNET_TEST_SKIP_LOG {log:?}: {e}"));
                // One write of one line: appends from parallel tests do not interleave.
                file.write_all(format!("{line}\n").as_bytes())
                    .unwrap_or_else(|e| panic!("write TAPNET_TEST_SKIP_LOG {log:?}: {e}"));
            }
            false
        }
        Decision::Fail(message) => panic!("{message}"),
    }
}
