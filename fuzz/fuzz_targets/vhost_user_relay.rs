//! Any bytes a VM might write to its vhost-user socket (`tapnet port add --vhost-user`), in
//! reads of any size: reading them into messages and deciding which are held back never
//! panics, and a message never takes more than its header announces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::vhost_user_relay::check_arbitrary_relay;

fuzz_target!(|data: &[u8]| {
    check_arbitrary_relay(data);
});
