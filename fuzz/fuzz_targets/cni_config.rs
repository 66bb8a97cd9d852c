//! A CNI runtime's network configuration on `tapnet-cni`'s stdin: parsing it (with each
//! command) may fail but never panic; nor may merging into, or checking against, whatever
//! `prevResult` it carries.
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
            if let Some(prev) = &conf.prev_result {
                let a = cni::Attachment {
                    interface: "eth0".into(),
                    mac: "02:42:0a:00:00:02".into(),
                    address: Some("10.0.0.2/24".into()),
                    netns: "/run/netns/x".into(),
                    ..cni::Attachment::default()
                };
                let _ = cni::chain_result(Some(prev), cni::add_result(&conf.cni_version, &a));
                let _ = cni::check_prev_result(prev, &a);
            }
        }
    }
});
