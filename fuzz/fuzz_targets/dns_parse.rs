//! Any bytes a sandbox might send to the gateway's DNS port: parsing and the resolution policy
//! must never panic, and whatever they answer must be a well-formed response to the query.
//! The checks live in the library so that a unit test runs the same body on pseudo-random input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::gateway::dns::check_arbitrary_message;

fuzz_target!(|data: &[u8]| {
    // Parses the query, runs `answer` and `answer_tcp` with a lookup that knows "web.local"
    // (A and AAAA), "web6.local" (AAAA only) and their reverse names (in-addr.arpa and
    // ip6.arpa nibbles), builds SERVFAIL, and reads the bytes as resolv.conf text and as TCP-framed messages.
    check_arbitrary_message(data);
});
