//! IPv6 from a guarded port: any packet, or any ICMPv6 or UDP message from the port's own
//! link-local address, is judged by port security without panicking; whatever passes comes
//! from one of the port's addresses and is no Router Advertisement or Redirect.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::security::check_arbitrary_ipv6;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_ipv6(data);
});
