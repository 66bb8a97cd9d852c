//! The fd keeper's messages (`tapnet::keeper::proto`): the keeper parses whatever a peer of its
//! user sends, and the daemon whatever the keeper answers. On any bytes and any fd count the
//! parsers must never panic, and what parses must be what `message` makes of it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::keeper::proto::check_arbitrary;

fuzz_target!(|data: &[u8]| {
    check_arbitrary(data);
});
