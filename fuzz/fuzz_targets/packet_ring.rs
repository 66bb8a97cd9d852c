//! Any bytes in an `--iface` port's RX ring (`datapath/packet_ring.rs`): reading them as slots
//! (status, lengths, the frame's offset) and copying each frame out never panics and never
//! reaches past a slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::packet_ring::check_arbitrary_ring;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_ring(data);
});
