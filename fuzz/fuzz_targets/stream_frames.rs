//! Any bytes a VM might write to its socket port (`tapnet port add --qemu-socket`): splitting
//! them into length-prefixed frames never panics and never reaches past the bytes read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::stream_port::check_arbitrary_stream;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_stream(data);
});
