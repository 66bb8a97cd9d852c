//! Any bytes a TAP might hand us, pushed through the software offloads: segmentation and checksum
//! completion must never panic, and every emitted frame must be a clean virtio-net header plus
//! an Ethernet frame no larger than one VLAN-tagged 64 KiB IP packet. The unit test
//! `offload::segment::tests::fuzz_one` runs the same body over pseudo-random inputs on stable.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::frame::{ETH_HDR_LEN, VNET_HDR_LEN, VirtioNetHdr};
use tapnet::offload::{Segmenter, complete_checksum};

thread_local! {
    /// One segmenter for the whole run, as a datapath thread keeps one.
    static SEGMENTER: RefCell<Segmenter> = RefCell::new(Segmenter::new());
}

fuzz_target!(|data: &[u8]| {
    SEGMENTER.with_borrow_mut(|seg| {
        let _ = seg.segment(data, &mut |s| {
            assert!(s.len() >= VNET_HDR_LEN + ETH_HDR_LEN);
            assert!(s.len() <= VNET_HDR_LEN + ETH_HDR_LEN + 4 + 65535);
            assert!(s[..VNET_HDR_LEN].iter().all(|&b| b == 0));
        });
    });
    if let Some(hdr) = VirtioNetHdr::parse(data) {
        let mut frame = data[VNET_HDR_LEN..].to_vec();
        let _ = complete_checksum(&mut frame, &hdr);
        assert_eq!(frame.len(), data.len() - VNET_HDR_LEN);
    }
});
