//! Which client requests the state already holds, so that a request retried after its answer
//! was lost (the daemon was killed between commit and reply) is recognised instead of done
//! twice. The client sends an id with every request; the thread that serves it names the id
//! here, and the state records it in the same write as the request's commit.

use std::cell::RefCell;
use std::collections::VecDeque;

/// Ids of committed requests kept in the state: enough for every client that can be retrying
/// at once, small enough that state.json does not grow with them.
pub const KEPT: usize = 256;

/// The longest id accepted; the client sends 32 hex digits.
pub const MAX_ID_LEN: usize = 64;

thread_local! {
    static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run `body` as the request `id` (a client's retry sends the same id again).
pub fn serving<T>(id: Option<String>, body: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
    CURRENT.with(|c| *c.borrow_mut() = id);
    let _reset = Reset;
    body()
}

/// The id of the request this thread serves, if its client sent one.
pub fn current() -> Option<String> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Has the state committed the request this thread serves (a retry of one that was done)?
pub fn already_committed(committed: &VecDeque<String>) -> bool {
    current().is_some_and(|id| committed.contains(&id))
}

/// Note the request this thread serves as committed, before the state is written.
pub fn record(committed: &mut VecDeque<String>) {
    let Some(id) = current() else { return };
    if committed.contains(&id) {
        return;
    }
    committed.push_back(id);
    while committed.len() > KEPT {
        committed.pop_front();
    }
}

/// A request id as the client makes it: 128 random bits in hex. Without the kernel's random
/// source (it never fails on Linux after boot) the id is left out, and a retry is not
/// recognised, as before ids existed.
pub fn new_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Is `id` an id this daemon keeps (bounded, printable)?
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_recorded_once_and_only_the_newest_are_kept() {
        let mut committed = VecDeque::new();
        record(&mut committed);
        assert!(committed.is_empty(), "no id, nothing recorded");
        serving(Some("a1".into()), || {
            assert!(!already_committed(&committed));
            record(&mut committed);
            record(&mut committed);
            assert!(already_committed(&committed));
        });
        assert_eq!(committed, ["a1"]);
        assert_eq!(current(), None, "the id ends with the request");
        for i in 0..KEPT + 5 {
            serving(Some(format!("r{i}")), || record(&mut committed));
        }
        assert_eq!(committed.len(), KEPT);
        assert!(!committed.contains(&"a1".to_string()));
        assert_eq!(committed.back().map(String::as_str), Some("r260"));
    }

    #[test]
    fn ids_are_random_hex_and_bounded() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_ne!(a, b);
        assert!(valid_id(&a) && a.len() == 32);
        assert!(!valid_id(""));
        assert!(!valid_id("x\ny"));
        assert!(!valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }
}
