//! Any bytes a UDP socket might receive on the VTEP port: decapsulation refuses or accepts them
//! without panicking, an accepted packet re-encapsulates to the same VNI and inner frame, and
//! its flow's source port stays in range. The unit tests of `datapath::vxlan` run the same body
//! (`check_arbitrary_packet`) over pseudo-random inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::vxlan::check_arbitrary_packet;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_packet(data);
});
