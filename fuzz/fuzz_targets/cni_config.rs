//! A CNI runtime's network configuration on `tapnet-cni`'s stdin: parsing it (with each
//! command) may fail but never panic.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tapnet::cni;

fuzz_target!(|data: &[u8]| {
    for command in ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] {
        let env: HashMap<String, String> = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Ok((call, conf)) = cni::parse(&env, data) {
            let _ = cni::request(&call, &conf);
        }
    }
});
