//! Any bytes a client might send the metrics server: routing the request head never panics,
//! and only a well-formed `GET /metrics` line is served.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::metrics::{Route, route};

fuzz_target!(|data: &[u8]| {
    if route(data) == Route::Metrics {
        assert!(data.starts_with(b"GET /metrics") || data.starts_with(b"HEAD /metrics"));
    }
});
