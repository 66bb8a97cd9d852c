//! The rule every test that needs an outside tool follows (tests/common/skip.rs): present, it
//! runs; missing, it fails, unless `TAPNET_TEST_SKIP` names it, when it is skipped, said on
//! stderr and logged to `TAPNET_TEST_SKIP_LOG`. The decision is checked as a pure function, and
//! `require` itself in a child process of this test binary, so no test changes this process's
//! environment.

mod common;

use std::process::{Command, Output};

use common::skip::{Decision, decide, need, present, require};

/// A tool no machine has.
const MISSING: &str = "tapnet-no-such-tool-xyz";

#[test]
fn decide_runs_skips_or_fails() {
    let missing = [need(MISSING, "tapnet-no-such-package")];
    assert_eq!(decide("t", "nosuch", &[], None), Decision::Run);
    assert_eq!(decide("t", "nosuch", &[], Some("nosuch")), Decision::Run);
    assert_eq!(
        decide("t", "nosuch", &missing, Some("docker, nosuch")),
        Decision::Skip(format!(
            "tapnet-test-skip: t: {MISSING} missing (TAPNET_TEST_SKIP=nosuch)"
        ))
    );
    for list in [
        None,
        Some(""),
        Some("docker,etcd"),
        Some("nosuchx"),
        Some("nosuc"),
    ] {
        let Decision::Fail(message) = decide("t", "nosuch", &missing, list) else {
            panic!("{list:?} must not skip");
        };
        for part in [
            MISSING,
            "install tapnet-no-such-package",
            "TAPNET_TEST_SKIP=nosuch",
        ] {
            assert!(message.contains(part), "{part} not in {message}");
        }
    }
}

#[test]
fn present_looks_on_the_path_given_and_at_paths() {
    let path = std::env::var("PATH").unwrap_or_default();
    assert!(present("sh", &path), "positive control: sh on {path}");
    assert!(!present("sh", "/nonexistent"));
    assert!(!present(MISSING, &path));
    assert!(present("/proc/self", ""));
    assert!(!present("/nonexistent/tapnet", &path));
}

/// Run only as a child of `require_*` below, with the environment they set (`--include-ignored`
/// alone runs it as a no-op).
#[test]
#[ignore = "a child of the require_* tests"]
fn child_needing_a_missing_tool() {
    if std::env::var_os("TAPNET_SKIPS_CHILD").is_some() {
        assert!(!require(
            "nosuch",
            &[need(MISSING, "tapnet-no-such-package")]
        ));
    }
}

/// Run `child_needing_a_missing_tool` in a child with `TAPNET_TEST_SKIP` set to `skip` (or
/// unset) and a fresh skip log; its output and the log's text.
fn child(skip: Option<&str>, tag: &str) -> (Output, String) {
    let log = std::env::temp_dir().join(format!("tapnet-skips-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--ignored", "--exact", "child_needing_a_missing_tool"])
        .env("TAPNET_SKIPS_CHILD", "1")
        .env("TAPNET_TEST_SKIP_LOG", &log)
        .env_remove("TAPNET_TEST_SKIP");
    if let Some(skip) = skip {
        cmd.env("TAPNET_TEST_SKIP", skip);
    }
    let out = cmd.output().expect("run the child test");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (out, logged)
}

#[test]
fn require_skips_a_missing_tool_named_in_tapnet_test_skip() {
    let (out, logged) = child(Some("etcd,nosuch"), "named");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = format!(
        "tapnet-test-skip: skips::child_needing_a_missing_tool: {MISSING} missing \
         (TAPNET_TEST_SKIP=nosuch)"
    );
    assert_eq!(logged, format!("{line}\n"));
    assert!(stderr.contains(&line), "not said on stderr: {stderr}");
}

#[test]
fn require_fails_a_missing_tool_not_named() {
    for (skip, tag) in [(None, "unset"), (Some("docker"), "other")] {
        let (out, logged) = child(skip, tag);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{skip:?} passed: {stdout}");
        assert!(
            stdout.contains(MISSING) && stdout.contains("TAPNET_TEST_SKIP=nosuch"),
            "{stdout}"
        );
        assert_eq!(logged, "", "{skip:?} logged a skip");
    }
}
