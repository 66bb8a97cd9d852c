//! Namespaces, TAP devices inside them, and their interface configuration.

pub mod namespace;
pub mod netlink;
pub mod processes;
pub mod sysctl;
pub mod tap;

/// A test hook: `TAPNET_TEST_SLOW_NETNS_MS` (read once) makes every namespace and TAP creation,
/// and every setting of default routes, this slow, so that a test can show the controller's
/// lock is not held meanwhile.
pub(crate) fn slow_for_test() {
    static SLOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let slow = *SLOW.get_or_init(|| {
        std::env::var("TAPNET_TEST_SLOW_NETNS_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |ms| ms.min(10_000))
    });
    if slow > 0 {
        std::thread::sleep(std::time::Duration::from_millis(slow));
    }
}
