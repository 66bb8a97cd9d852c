//! Any bytes a sandbox might send, as `trace --live` summarises them: never panics, and the
//! summary's length is the frame's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::trace::summarize;

fuzz_target!(|data: &[u8]| {
    let s = summarize(data);
    assert_eq!(s.len, data.len());
    let _ = s.line();
});
