//! A DHCPv4 client's message to the gateway: any bytes are read and answered without
//! panicking, and an answer never hands out an address other than the client's own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::gateway::dhcp::answer_arbitrary;

fuzz_target!(|data: &[u8]| {
    answer_arbitrary(data);
});
