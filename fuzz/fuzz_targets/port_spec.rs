//! `-p` specs come from API clients (the control socket, topology files): `ports::parse` must
//! never panic, and what it accepts has real ports and at least one host binding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    tapnet::cli::check_arbitrary_publish_spec(spec);
});
