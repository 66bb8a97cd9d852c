//! Any bytes a TAP might hand us: parsing must never panic, and whatever it accepts must be a
//! frame the switch can forward (source is a station address, lengths are consistent); port
//! security checks any such frame without panicking or reading past it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::fdb::Fdb;
use tapnet::datapath::frame::parse;
use tapnet::datapath::security::check_arbitrary_frame;
use tapnet::datapath::switch::decide;
use tapnet::wire::{ETH_HDR_LEN, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let mtu = 1500;
    if let Ok(info) = parse(data, mtu) {
        assert!(data.len() >= VNET_HDR_LEN + ETH_HDR_LEN);
        assert!(!info.src.is_multicast() && !info.src.is_zero());
        let fdb = Fdb::new(300);
        let _ = decide(&fdb, &info, 1, 0);
        assert_eq!(fdb.lookup(info.src, 0), Some(1));
    }
    check_arbitrary_frame(data);
});
