//! Any text as a topology file: parsing and checking never panic, errors are one line, and an
//! accepted file plans against an empty daemon.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::topology::Topology;
use tapnet::topology::plan::{Current, Record, plan_up};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Topology::parse(text, "fuzz") {
        Ok(topo) => {
            let _ = plan_up(&topo, &Current::default(), &Record::default());
        }
        Err(e) => assert_eq!(e.lines().count(), 1, "{e}"),
    }
});
