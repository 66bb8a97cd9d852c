//! Any frame a sandbox may send to an overlay network's VTEP port: the ARP and Neighbour
//! Discovery proxies (which answer for remote stations the cluster store knows) answer it or
//! not, never panic, and an answer goes to the asker, from the station asked for, with a valid
//! ICMPv6 checksum. The unit tests of `datapath::vtep` run the same body over pseudo-random
//! frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::vtep::check_arbitrary_frame;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_frame(data);
});
