//! HTTP heads and JSON bodies of the plugin protocol: what dockerd sends tapnet and what a
//! remote plugin answers. Neither parser may panic on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapnet::plugin::{http, protocol};

fuzz_target!(|data: &[u8]| {
    let _ = http::parse_request_head(data);
    let _ = http::parse_response_head(data);
    let _ = protocol::decode::<protocol::CreateNetworkRequest>("x", data);
    let _ = protocol::decode::<protocol::CreateEndpointRequest>("x", data);
    let _ = protocol::decode::<protocol::JoinRequest>("x", data);
    let _ = protocol::decode::<protocol::JoinResponse>("x", data);
    let _ = protocol::decode::<protocol::ActivateResponse>("x", data);
    let _ = protocol::error_of(data);
    if let Ok(req) = protocol::decode::<protocol::CreateNetworkRequest>("x", data) {
        let _ = protocol::generic_options(&req.options);
        let _ = protocol::enable_ipv6(&req.options);
    }
});
