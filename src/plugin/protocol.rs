//! libnetwork's remote driver protocol: the JSON bodies of the HTTP POSTs a network plugin
//! answers, with the field names Docker uses (`drivers/remote/api/api.go` in libnetwork).
//! The same types serve both sides: tapnet as a Docker plugin and tapnet as a plugin's client.
//! Unknown fields are ignored and absent ones default, as Go's decoder does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Content-Type` of every request and answer (plugin API v1.2).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

pub const ACTIVATE: &str = "/Plugin.Activate";
pub const GET_CAPABILITIES: &str = "/NetworkDriver.GetCapabilities";
pub const CREATE_NETWORK: &str = "/NetworkDriver.CreateNetwork";
pub const DELETE_NETWORK: &str = "/NetworkDriver.DeleteNetwork";
pub const CREATE_ENDPOINT: &str = "/NetworkDriver.CreateEndpoint";
pub const ENDPOINT_OPER_INFO: &str = "/NetworkDriver.EndpointOperInfo";
pub const DELETE_ENDPOINT: &str = "/NetworkDriver.DeleteEndpoint";
pub const JOIN: &str = "/NetworkDriver.Join";
pub const LEAVE: &str = "/NetworkDriver.Leave";
pub const PROGRAM_EXTERNAL: &str = "/NetworkDriver.ProgramExternalConnectivity";
pub const REVOKE_EXTERNAL: &str = "/NetworkDriver.RevokeExternalConnectivity";
pub const DISCOVER_NEW: &str = "/NetworkDriver.DiscoverNew";
pub const DISCOVER_DELETE: &str = "/NetworkDriver.DiscoverDelete";
/// Only global-scope drivers get these; a local driver answers them with an error.
pub const ALLOCATE_NETWORK: &str = "/NetworkDriver.AllocateNetwork";
pub const FREE_NETWORK: &str = "/NetworkDriver.FreeNetwork";

/// Options Docker puts in CreateNetwork's `Options`: the `--opt` map of `docker network create`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// `docker network create --ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// ProgramExternalConnectivity's `Options`: the container's `-p` bindings.
pub const PORT_MAP: &str = "com.docker.network.portmap";

/// One `-p` binding as dockerd sends it; `Proto` is the IP protocol number (6 TCP, 17 UDP).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortBinding {
    #[serde(rename = "Proto", default)]
    pub proto: u8,
    #[serde(rename = "IP", default)]
    pub ip: Option<String>,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: Option<String>,
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

/// The `-p` bindings of a ProgramExternalConnectivity request.
pub fn port_bindings(options: &Options) -> Result<Vec<PortBinding>, String> {
    match options.as_ref().and_then(|o| o.get(PORT_MAP)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("malformed {PORT_MAP}: {e}"))
        }
    }
}

/// A failed call: any answer may carry it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "Err", default)]
    pub err: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements", default)]
    pub implements: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapabilitiesResponse {
    #[serde(rename = "Scope", default)]
    pub scope: String,
    #[serde(rename = "ConnectivityScope", default)]
    pub connectivity_scope: String,
}

/// One address pool of a network; addresses are CIDR strings (`"172.30.0.1/16"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
    #[serde(
        rename = "AuxAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

pub type Options = Option<BTreeMap<String, Value>>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Options,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
}

/// An endpoint's interface: addresses in CIDR form, the MAC as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
    #[serde(rename = "Options", default)]
    pub options: Options,
}

/// The plugin may fill in what Docker left empty (the MAC); it must not change the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// DeleteEndpoint, EndpointOperInfo, Leave and RevokeExternalConnectivity name an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfoResponse {
    #[serde(rename = "Value", default)]
    pub value: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// Path of the sandbox's network namespace.
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
    #[serde(rename = "Options", default)]
    pub options: Options,
}

/// The link to move into the sandbox (`SrcName`) and the prefix of its name there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName", default)]
    pub src_name: String,
    #[serde(rename = "DstPrefix", default)]
    pub dst_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StaticRoute {
    #[serde(rename = "Destination", default)]
    pub destination: String,
    /// 0: via `NextHop`; 1: directly connected.
    #[serde(rename = "RouteType", default)]
    pub route_type: i64,
    #[serde(rename = "NextHop", default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName", default)]
    pub interface_name: Option<InterfaceName>,
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "GatewayIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway_ipv6: String,
    #[serde(
        rename = "StaticRoutes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub static_routes: Option<Vec<StaticRoute>>,
    #[serde(rename = "DisableGatewayService", default)]
    pub disable_gateway_service: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramExternalRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    #[serde(rename = "Options", default)]
    pub options: Options,
}

/// Decode a request or answer body; an empty body reads as `{}` (Docker sends none to
/// `/Plugin.Activate`).
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("malformed {what} body: {e}"))
}

/// The `Err` of an answer, if it carries a non-empty one.
pub fn error_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .map(|e| e.err)
        .filter(|e| !e.is_empty())
}

/// `--opt` strings (`key=value`) from Docker's generic options; values that are not strings
/// are written as JSON.
/// `com.docker.network.enable_ipv6` (`docker network create --ipv6`), a bool or its string.
pub fn enable_ipv6(options: &Options) -> bool {
    match options.as_ref().and_then(|o| o.get(ENABLE_IPV6)) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

pub fn generic_options(options: &Options) -> Vec<String> {
    let Some(Value::Object(map)) = options.as_ref().and_then(|o| o.get(GENERIC_OPTIONS)) else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_network_as_docker_sends_it() {
        let body = br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,
            "com.docker.network.generic":{"mtu":"1400","n":3}},
            "IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"172.30.0.1/16","Pool":"172.30.0.0/16"}],
            "IPv6Data":[]}"#;
        let req: CreateNetworkRequest = decode("CreateNetwork", body).unwrap();
        assert_eq!(req.network_id, "abc");
        let v4 = req.ipv4_data.unwrap();
        assert_eq!(v4[0].pool, "172.30.0.0/16");
        assert_eq!(v4[0].gateway, "172.30.0.1/16");
        assert_eq!(
            generic_options(&req.options),
            vec!["mtu=1400".to_string(), "n=3".to_string()]
        );
    }

    #[test]
    fn enable_ipv6_as_docker_sends_it() {
        let on: CreateNetworkRequest = decode(
            "CreateNetwork",
            br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":true},
            "IPv6Data":[{"Pool":"fd00:d0c::/64","Gateway":"fd00:d0c::1/64"}]}"#,
        )
        .unwrap();
        assert!(enable_ipv6(&on.options));
        assert_eq!(on.ipv6_data.unwrap()[0].gateway, "fd00:d0c::1/64");
        let off: CreateNetworkRequest = decode(
            "CreateNetwork",
            br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false}}"#,
        )
        .unwrap();
        assert!(!enable_ipv6(&off.options));
        assert!(!enable_ipv6(&None));
    }

    #[test]
    fn join_answer_has_docker_field_names() {
        let answer = JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: "tn0011aabb".into(),
                dst_prefix: "eth".into(),
            }),
            gateway: "172.30.0.1".into(),
            ..JoinResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"InterfaceName":{"SrcName":"tn0011aabb","DstPrefix":"eth"},
                   "Gateway":"172.30.0.1","DisableGatewayService":false})
        );
    }

    #[test]
    fn endpoint_answer_never_carries_an_address_it_was_not_given() {
        let answer = CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "02:42:ac:1e:00:02".into(),
                ..EndpointInterface::default()
            }),
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"Interface":{"MacAddress":"02:42:ac:1e:00:02"}}"#
        );
    }

    #[test]
    fn empty_bodies_nulls_and_errors() {
        let r: NetworkRequest = decode("x", b"").unwrap();
        assert_eq!(r.network_id, "");
        let r: CreateEndpointRequest =
            decode("x", br#"{"Interface":null,"Options":null}"#).unwrap();
        assert!(r.interface.is_none());
        assert!(decode::<NetworkRequest>("DeleteNetwork", b"{").is_err());
        assert!(decode::<NetworkRequest>("DeleteNetwork", b"[1]").is_err());
        assert_eq!(error_of(br#"{"Err":"no"}"#).as_deref(), Some("no"));
        assert_eq!(error_of(br#"{"Err":""}"#), None);
        assert_eq!(error_of(b"garbage"), None);
    }
}
