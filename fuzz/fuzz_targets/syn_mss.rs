//! `raise_syn_mss` runs on every SYN a sandbox sends to the gateway, editing the frame in place
//! before smoltcp reads it: on any bytes it must never panic, keep the frame's length, and
//! change at most the two bytes of one MSS option's value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::gateway::tso::check_arbitrary_syn;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_syn(data);
});
