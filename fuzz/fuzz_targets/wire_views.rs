//! Every protocol view of the wire layer over any bytes: construction refuses or accepts, no
//! accessor panics, and every range a view hands out lies inside the bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::wire::check_arbitrary_bytes;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_bytes(data);
});
