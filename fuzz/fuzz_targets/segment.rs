//! Any bytes a TAP might hand us, pushed through the software offloads: segmentation and checksum
//! completion must never panic, and every emitted frame must be a clean virtio-net header plus
//! an Ethernet frame no larger than one VLAN-tagged 64 KiB IP packet. The unit test
//! `offload::segment::tests` run the same body (`check_arbitrary_frame`) over pseudo-random inputs.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tapnet::offload::Segmenter;
use tapnet::offload::segment::check_arbitrary_frame;

thread_local! {
    /// One segmenter for the whole run, as a datapath thread keeps one.
    static SEGMENTER: RefCell<Segmenter> = RefCell::new(Segmenter::new());
}

fuzz_target!(|data: &[u8]| {
    SEGMENTER.with_borrow_mut(|seg| check_arbitrary_frame(seg, data));
});
