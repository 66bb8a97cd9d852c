//! Any bytes a UDP socket might receive on the VTEP port: decapsulation refuses or accepts them
//! without panicking, an accepted packet re-encapsulates to the same VNI and inner frame, and
//! its flow's source port stays in range. The unit tests of `datapath::vxlan` run the same body
//! (`check_arbitrary_packet`) over pseudo-random inputs. The inner frame then goes through the
//! receive coalescer, as the VTEP passes it on (`coalesce::check_arbitrary_frame`).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::coalesce::{Coalescer, check_arbitrary_frame};
use tapnet::datapath::vxlan::{HEADER_LEN, check_arbitrary_packet, decap};
use tapnet::wire::VNET_HDR_LEN;

thread_local! {
    /// One coalescer and frame buffer for the whole run, as a VTEP keeps them.
    static STATE: RefCell<(Coalescer, Vec<u8>)> = RefCell::new((Coalescer::new(), Vec::new()));
}

fuzz_target!(|data: &[u8]| {
    check_arbitrary_packet(data);
    if let Ok((_, inner)) = decap(data) {
        STATE.with_borrow_mut(|(c, buf)| {
            buf.clear();
            buf.resize(VNET_HDR_LEN, 0);
            buf.extend_from_slice(inner);
            debug_assert_eq!(buf.len(), VNET_HDR_LEN + data.len() - HEADER_LEN);
            check_arbitrary_frame(c, buf);
        });
    }
});
