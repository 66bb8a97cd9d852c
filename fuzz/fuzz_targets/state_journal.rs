//! The state journal is read back at every start from a file in the state dir (a crash may
//! have cut its last line anywhere, a disk may have damaged it): `journal::read` must never
//! panic, and whatever it accepts must replay onto a state without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tapnet::check_arbitrary_journal(data);
});
