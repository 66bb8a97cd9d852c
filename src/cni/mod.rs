//! The CNI side of `tapnet-cni` (CNI spec 1.0/1.1): the network configuration on stdin, the
//! `CNI_*` environment, the result and error JSON. The work is the daemon's (`CniAdd`, ...):
//! a CNI plugin exits after each call, so the daemon holds the TAP's fd.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::types::Request;

/// The versions this plugin speaks; STATUS and GC exist from 1.1.0 on.
pub const SUPPORTED: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// CNI's well-known error codes.
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const INVALID_ENV: u32 = 4;
pub const DECODE_FAILED: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD now (spec 1.1: the daemon is not running).
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// Plugin-specific: the daemon refused or failed.
pub const DAEMON_ERROR: u32 = 100;
/// Plugin-specific: CHECK found the attachment other than `prevResult` says.
pub const CHECK_MISMATCH: u32 = 101;

/// The network configuration: CNI's keys and tapnet's own.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The tapnet network to join [default: the config's `name`].
    #[serde(default)]
    pub network: Option<String>,
    /// Subnet of the network, created with it if missing.
    #[serde(default)]
    pub subnet: Option<String>,
    /// IPv6 prefix: the network, if created, is dual-stack.
    #[serde(default)]
    pub subnet6: Option<String>,
    /// host-local's form of the same: `subnet`, or `ranges` of either family.
    #[serde(default)]
    pub ipam: Option<Ipam>,
    /// The tapnet state dir [default: tapnet's].
    #[serde(rename = "stateDir", default)]
    pub state_dir: Option<String>,
    /// The result of the plugins before this one in a chain (ADD), or the cached result of
    /// the whole chain (CHECK).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still has; tapnet's others on the network go.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The `ipam` section as host-local writes it; tapnet-cni allocates from it itself.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Ipam {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    /// One set of ranges per family; tapnet takes the first range of each.
    #[serde(default)]
    pub ranges: Vec<Vec<Range>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Range {
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The prefixes and gateways a configuration gives, one per family.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subnets {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub subnet6: Option<String>,
    pub gateway6: Option<String>,
}

impl NetConf {
    /// The subnets of the top-level keys and of `ipam`, by family (an IPv6 prefix has a `:`).
    pub fn subnets(&self) -> Result<Subnets, CniError> {
        let mut out = Subnets::default();
        let mut add = |what: &str, subnet: &str, gateway: Option<&str>| {
            let v6 = subnet.contains(':');
            if gateway.is_some_and(|g| g.contains(':') != v6) {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("{what}: gateway {gateway:?} is not of the family of {subnet:?}"),
                ));
            }
            let (s, g) = if v6 {
                (&mut out.subnet6, &mut out.gateway6)
            } else {
                (&mut out.subnet, &mut out.gateway)
            };
            if s.as_deref().is_some_and(|old| old != subnet) {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!(
                        "{what}: a second IPv{} subnet {subnet:?} (tapnet takes one per family)",
                        if v6 { 6 } else { 4 }
                    ),
                ));
            }
            *s = Some(subnet.to_string());
            if let Some(gw) = gateway {
                *g = Some(gw.to_string());
            }
            Ok(())
        };
        if let Some(s) = &self.subnet {
            if s.contains(':') {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("subnet {s:?} is IPv6: give it as subnet6"),
                ));
            }
            add("subnet", s, None)?;
        }
        if let Some(s) = &self.subnet6 {
            if !s.contains(':') {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("subnet6 {s:?} is not IPv6"),
                ));
            }
            add("subnet6", s, None)?;
        }
        if let Some(ipam) = &self.ipam {
            if let Some(s) = &ipam.subnet {
                add("ipam.subnet", s, ipam.gateway.as_deref())?;
            }
            for set in &ipam.ranges {
                if let Some(r) = set.first() {
                    add("ipam.ranges", &r.subnet, r.gateway.as_deref())?;
                }
            }
        }
        Ok(out)
    }
}

/// A CNI error: printed as JSON on stdout, exit status 1.
#[derive(Debug, PartialEq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

/// One call: what the runtime asked for.
#[derive(Debug, PartialEq)]
pub enum Call {
    Version,
    Add(Endpoint),
    Del(Endpoint),
    Check(Endpoint),
    Status,
    Gc,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    /// Empty on DEL when the namespace is gone.
    pub netns: String,
}

/// The daemon's answer to CniAdd/CniCheck.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub mac: String,
    /// CIDR form; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub netns: String,
    /// On a network with an IPv6 prefix: CIDR form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

/// CNI's container id rule (libcni's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`): the id ends up in
/// labels, `stats` rows and the state file, so nothing else gets through.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "container id {id:?} is invalid: it must start with a letter or digit and hold only \
             letters, digits, '_', '.' and '-'"
        ))
    }
}

/// CNI's interface name rule (libcni's `ValidateInterfaceName`: 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace), and no `%`: the kernel expands `%d` in a new name to a
/// free number, so `e%d` would become some other interface than the one asked for.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > 15 {
        "it is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "it is . or .."
    } else if name.contains(['/', ':', '%']) || name.chars().any(char::is_whitespace) {
        "it holds '/', ':', '%' or whitespace"
    } else {
        return Ok(());
    };
    Err(format!("interface name {name:?} is invalid: {why}"))
}

/// The daemon's error when ADD finds `ifname` taken in `netns`; the plugin recognises it by
/// equality and answers with [`INVALID_ENV`].
pub fn ifname_taken(ifname: &str, netns: &str) -> String {
    format!("interface {ifname} already exists in namespace {netns}")
}

fn env_of<'a>(env: &'a HashMap<String, String>, key: &str) -> Result<&'a str, CniError> {
    env.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CniError::new(INVALID_ENV, format!("{key} is not set")))
}

/// Read the call from the environment and the configuration.
pub fn parse(env: &HashMap<String, String>, stdin: &[u8]) -> Result<(Call, NetConf), CniError> {
    let command = env_of(env, "CNI_COMMAND")?;
    if command == "VERSION" {
        return Ok((Call::Version, NetConf::default()));
    }
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE_FAILED, format!("network configuration: {e}")))?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not supported (supported: {})",
                conf.cni_version,
                SUPPORTED.join(", ")
            ),
        ));
    }
    let network = conf.network.clone().unwrap_or_else(|| conf.name.clone());
    crate::control::model::validate_name("network", &network)
        .map_err(|e| CniError::new(INVALID_CONFIG, e))?;
    conf.subnets()?;
    let endpoint = |need_netns: bool| -> Result<Endpoint, CniError> {
        let container_id = env_of(env, "CNI_CONTAINERID")?;
        validate_container_id(container_id)
            .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_CONTAINERID: {e}")))?;
        let ifname = env_of(env, "CNI_IFNAME")?;
        validate_ifname(ifname)
            .map_err(|e| CniError::new(INVALID_ENV, format!("CNI_IFNAME: {e}")))?;
        Ok(Endpoint {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: if need_netns {
                env_of(env, "CNI_NETNS")?.to_string()
            } else {
                env.get("CNI_NETNS").cloned().unwrap_or_default()
            },
        })
    };
    let since_1_1 = |what: &str| -> Result<(), CniError> {
        if conf.cni_version.as_str() < "1.1.0" {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!("{what} needs cniVersion 1.1.0"),
            ));
        }
        Ok(())
    };
    let call = match command {
        "ADD" => Call::Add(endpoint(true)?),
        "DEL" => Call::Del(endpoint(false)?),
        "CHECK" => Call::Check(endpoint(true)?),
        "STATUS" => {
            since_1_1("STATUS")?;
            Call::Status
        }
        "GC" => {
            since_1_1("GC")?;
            if conf.valid_attachments.is_none() {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    "GC needs cni.dev/valid-attachments (else it would remove every attachment)",
                ));
            }
            Call::Gc
        }
        other => {
            return Err(CniError::new(
                INVALID_ENV,
                format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            ));
        }
    };
    Ok((call, conf))
}

/// The request for the daemon.
pub fn request(call: &Call, conf: &NetConf) -> Option<Request> {
    let network = conf.network.clone().unwrap_or_else(|| conf.name.clone());
    match call {
        Call::Add(ep) => {
            // `parse` checked the subnets.
            let s = conf.subnets().unwrap_or_default();
            Some(Request::CniAdd {
                network,
                subnet: s.subnet,
                gateway: s.gateway,
                subnet6: s.subnet6,
                gateway6: s.gateway6,
                container_id: ep.container_id.clone(),
                ifname: ep.ifname.clone(),
                netns: ep.netns.clone(),
            })
        }
        Call::Del(ep) => Some(Request::CniDel {
            container_id: ep.container_id.clone(),
            ifname: ep.ifname.clone(),
        }),
        Call::Check(ep) => Some(Request::CniCheck {
            container_id: ep.container_id.clone(),
            ifname: ep.ifname.clone(),
        }),
        Call::Status => Some(Request::Ping),
        Call::Gc => Some(Request::CniGc {
            network,
            valid: conf
                .valid_attachments
                .iter()
                .flatten()
                .map(|v| (v.container_id.clone(), v.ifname.clone()))
                .collect(),
        }),
        Call::Version => None,
    }
}

/// The result of ADD in the spec's form: an `ips` entry and a default route per family.
pub fn add_result(version: &str, a: &Attachment) -> Value {
    let entry = |address: &str, gateway: Option<&String>, family: &str| {
        let mut ip = json!({"address": address, "interface": 0});
        if let Some(gw) = gateway {
            ip["gateway"] = json!(gw);
        }
        if version == "0.4.0" {
            ip["version"] = json!(family);
        }
        ip
    };
    let mut ips: Vec<Value> = a
        .address
        .iter()
        .map(|address| entry(address, a.gateway.as_ref(), "4"))
        .collect();
    let mut routes: Vec<Value> = a
        .gateway
        .iter()
        .map(|gw| json!({"dst": "0.0.0.0/0", "gw": gw}))
        .collect();
    if let Some(address6) = &a.address6 {
        ips.push(entry(address6, a.gateway6.as_ref(), "6"));
        routes.extend(a.gateway6.iter().map(|gw| json!({"dst": "::/0", "gw": gw})));
    }
    json!({
        "cniVersion": version,
        "interfaces": [{"name": a.interface, "mac": a.mac, "sandbox": a.netns}],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// ADD's result in a chain: this plugin's interface, addresses and routes appended to those
/// of the plugins before it (`prev`), its addresses pointing at its interface's index there.
/// First in the chain (no `prev`), its own result as it is.
pub fn chain_result(prev: Option<&Value>, ours: Value) -> Value {
    let Some(prev) = prev.filter(|p| p.is_object()) else {
        return ours;
    };
    let mut out = prev.clone();
    let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    let mut interfaces = list(&out, "interfaces");
    let index = interfaces.len();
    interfaces.extend(list(&ours, "interfaces"));
    let mut ips = list(&out, "ips");
    ips.extend(list(&ours, "ips").into_iter().map(|mut ip| {
        ip["interface"] = json!(index);
        ip
    }));
    let mut routes = list(&out, "routes");
    routes.extend(list(&ours, "routes"));
    out["cniVersion"] = ours["cniVersion"].clone();
    out["interfaces"] = json!(interfaces);
    out["ips"] = json!(ips);
    out["routes"] = json!(routes);
    if out.get("dns").is_none() {
        out["dns"] = json!({});
    }
    out
}

/// CHECK against the chain's cached result: it must list this attachment's interface (by name
/// and namespace, with its MAC) and, on that interface, each of its addresses.
pub fn check_prev_result(prev: &Value, a: &Attachment) -> Result<(), CniError> {
    let mismatch = |what: String| CniError::new(CHECK_MISMATCH, what);
    let interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let index = interfaces
        .iter()
        .position(|i| {
            i["name"] == a.interface.as_str()
                && i.get("sandbox").is_none_or(|s| s == a.netns.as_str())
        })
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {} in {}",
                a.interface, a.netns
            ))
        })?;
    if let Some(mac) = interfaces[index]["mac"].as_str()
        && !mac.eq_ignore_ascii_case(&a.mac)
    {
        return Err(mismatch(format!(
            "prevResult gives {} the MAC {mac}; tapnet's is {}",
            a.interface, a.mac
        )));
    }
    let listed: Vec<&str> = prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| ip["interface"].as_u64() == Some(index as u64))
        .filter_map(|ip| ip["address"].as_str())
        .collect();
    for address in a.address.iter().chain(&a.address6) {
        if !listed.contains(&address.as_str()) {
            return Err(mismatch(format!(
                "prevResult does not list {address} on {} (it lists {listed:?})",
                a.interface
            )));
        }
    }
    Ok(())
}

pub fn version_result() -> Value {
    json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CONF: &[u8] =
        br#"{"cniVersion":"1.0.0","name":"podnet","type":"tapnet-cni","subnet":"10.88.0.0/24"}"#;

    #[test]
    fn calls_from_env_and_config() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        let (call, conf) = parse(&e, CONF).unwrap();
        assert_eq!(
            call,
            Call::Add(Endpoint {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                netns: "/run/netns/x".into()
            })
        );
        let Some(Request::CniAdd {
            network, subnet, ..
        }) = request(&call, &conf)
        else {
            panic!("an add request");
        };
        assert_eq!(network, "podnet");
        assert_eq!(subnet.as_deref(), Some("10.88.0.0/24"));
        // DEL without a namespace is fine; ADD is not.
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(matches!(parse(&e, CONF).unwrap().0, Call::Del(_)));
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert_eq!(parse(&e, CONF).unwrap_err().code, INVALID_ENV);
    }

    #[test]
    fn errors_carry_cni_codes() {
        let e = env(&[("CNI_COMMAND", "ADD")]);
        assert_eq!(parse(&e, b"{").unwrap_err().code, DECODE_FAILED);
        let old = br#"{"cniVersion":"0.1.0","name":"n"}"#;
        assert_eq!(parse(&e, old).unwrap_err().code, INCOMPATIBLE_VERSION);
        let bad = br#"{"cniVersion":"1.0.0","name":"../x"}"#;
        assert_eq!(parse(&e, bad).unwrap_err().code, INVALID_CONFIG);
        let e = env(&[("CNI_COMMAND", "STATUS")]);
        assert_eq!(parse(&e, CONF).unwrap_err().code, UNSUPPORTED_FIELD);
        let e = env(&[("CNI_COMMAND", "FROB")]);
        assert_eq!(parse(&e, CONF).unwrap_err().code, INVALID_ENV);
        assert_eq!(parse(&env(&[]), CONF).unwrap_err().code, INVALID_ENV);
        let json = CniError::new(7, "no").to_json("1.0.0");
        assert_eq!(json["code"], 7);
        assert_eq!(json["msg"], "no");
    }

    #[test]
    fn container_ids_and_interface_names_follow_cni_rules() {
        for id in ["c1", "0abc", "a_b.c-d", "A"] {
            assert!(validate_container_id(id).is_ok(), "{id}");
        }
        for id in ["", "-a", ".a", "_a", "a\nb", "a b", "a/b", "a:b", "é"] {
            assert!(validate_container_id(id).is_err(), "{id:?}");
        }
        for name in ["eth0", "a", "net1.100", "fifteen-chars-x"] {
            assert!(validate_ifname(name).is_ok(), "{name}");
        }
        for name in [
            "",
            ".",
            "..",
            "e%d",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "eth\n",
            "sixteen-chars-xx",
        ] {
            assert!(validate_ifname(name).is_err(), "{name:?}");
        }
        let base = [("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/run/netns/x")];
        for (id, ifname) in [("c\n1", "eth0"), ("c1", "e%d")] {
            let mut pairs = base.to_vec();
            pairs.extend([("CNI_CONTAINERID", id), ("CNI_IFNAME", ifname)]);
            assert_eq!(parse(&env(&pairs), CONF).unwrap_err().code, INVALID_ENV);
        }
    }

    #[test]
    fn add_result_shape() {
        let a = Attachment {
            interface: "eth0".into(),
            mac: "02:42:0a:58:00:02".into(),
            address: Some("10.88.0.2/24".into()),
            gateway: Some("10.88.0.1".into()),
            netns: "/run/netns/x".into(),
            ..Attachment::default()
        };
        let r = add_result("1.0.0", &a);
        assert_eq!(r["ips"][0]["address"], "10.88.0.2/24");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(r["routes"][0]["gw"], "10.88.0.1");
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(add_result("0.4.0", &a)["ips"][0]["version"], "4");
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["routes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn dual_stack_result_has_both_families() {
        let a = Attachment {
            interface: "eth0".into(),
            mac: "02:42:0a:58:00:02".into(),
            address: Some("10.88.0.2/24".into()),
            gateway: Some("10.88.0.1".into()),
            netns: "/run/netns/x".into(),
            address6: Some("fd00:88::2/64".into()),
            gateway6: Some("fd00:88::1".into()),
        };
        let r = add_result("1.0.0", &a);
        assert_eq!(r["ips"][1]["address"], "fd00:88::2/64");
        assert_eq!(r["ips"][1]["gateway"], "fd00:88::1");
        assert_eq!(r["ips"][1]["interface"], 0);
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["routes"][1]["dst"], "::/0");
        assert_eq!(r["routes"][1]["gw"], "fd00:88::1");
        assert_eq!(add_result("0.4.0", &a)["ips"][1]["version"], "6");
    }

    #[test]
    fn ipv6_only_result_has_one_entry_and_the_v6_route() {
        let a = Attachment {
            interface: "eth0".into(),
            mac: "02:42:0a:58:00:02".into(),
            netns: "/run/netns/x".into(),
            address6: Some("fd00:88::2/64".into()),
            gateway6: Some("fd00:88::1".into()),
            ..Attachment::default()
        };
        let r = add_result("1.1.0", &a);
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["ips"][0]["address"], "fd00:88::2/64");
        assert_eq!(r["routes"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["routes"][0]["dst"], "::/0");
    }

    fn eth0() -> Attachment {
        Attachment {
            interface: "eth0".into(),
            mac: "02:42:0a:58:00:02".into(),
            address: Some("10.88.0.2/24".into()),
            gateway: Some("10.88.0.1".into()),
            netns: "/run/netns/x".into(),
            ..Attachment::default()
        }
    }

    #[test]
    fn a_chained_result_keeps_what_came_before_and_points_at_its_own_interface() {
        let ours = add_result("1.0.0", &eth0());
        assert_eq!(chain_result(None, ours.clone()), ours, "first in the chain");
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "dns": {"nameservers": ["10.0.0.53"]},
        });
        let r = chain_result(Some(&prev), ours);
        assert_eq!(r["interfaces"][0]["name"], "lo");
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
        assert_eq!(r["ips"][1]["address"], "10.88.0.2/24");
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(
            r["dns"]["nameservers"][0], "10.0.0.53",
            "the DNS before it stays"
        );
        // Garbage instead of a result is not merged into.
        assert_eq!(
            chain_result(Some(&json!(7)), add_result("1.0.0", &eth0()))["ips"][0]["interface"],
            0
        );
    }

    #[test]
    fn check_finds_the_attachment_in_the_cached_result_or_says_what_differs() {
        let cached = chain_result(
            Some(&json!({"interfaces": [{"name": "lo"}], "ips": []})),
            add_result("1.0.0", &eth0()),
        );
        check_prev_result(&cached, &eth0()).unwrap();
        let moved = Attachment {
            address: Some("10.88.0.9/24".into()),
            ..eth0()
        };
        let e = check_prev_result(&cached, &moved).unwrap_err();
        assert_eq!(e.code, CHECK_MISMATCH);
        assert!(e.msg.contains("10.88.0.9/24"), "{}", e.msg);
        let other_mac = Attachment {
            mac: "02:42:0a:58:00:09".into(),
            ..eth0()
        };
        assert!(
            check_prev_result(&cached, &other_mac)
                .unwrap_err()
                .msg
                .contains("MAC")
        );
        let elsewhere = Attachment {
            netns: "/run/netns/y".into(),
            ..eth0()
        };
        assert!(check_prev_result(&cached, &elsewhere).is_err());
        assert!(check_prev_result(&json!("x"), &eth0()).is_err());
    }

    #[test]
    fn subnets_of_both_families_from_ipam() {
        let add = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"tapnet-cni","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"10.89.0.0/24","gateway":"10.89.0.1"}],[{"subnet":"fd00:89::/64"}]]}}"#;
        let (call, conf) = parse(&add, conf).unwrap();
        let Some(Request::CniAdd {
            subnet,
            gateway,
            subnet6,
            gateway6,
            ..
        }) = request(&call, &conf)
        else {
            panic!("an add request");
        };
        assert_eq!(subnet.as_deref(), Some("10.89.0.0/24"));
        assert_eq!(gateway.as_deref(), Some("10.89.0.1"));
        assert_eq!(subnet6.as_deref(), Some("fd00:89::/64"));
        assert_eq!(gateway6, None);
        let top =
            br#"{"cniVersion":"1.0.0","name":"n","subnet":"10.1.0.0/24","subnet6":"fd00:1::/64"}"#;
        let s = parse(&add, top).unwrap().1.subnets().unwrap();
        assert_eq!(s.subnet6.as_deref(), Some("fd00:1::/64"));
        for bad in [
            &br#"{"cniVersion":"1.0.0","name":"n","subnet":"fd00::/64"}"#[..],
            br#"{"cniVersion":"1.0.0","name":"n","subnet6":"10.0.0.0/24"}"#,
            br#"{"cniVersion":"1.0.0","name":"n","subnet6":"fd00:1::/64","ipam":{"subnet":"fd00:2::/64"}}"#,
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"fd00::/64","gateway":"10.0.0.1"}]]}}"#,
        ] {
            assert_eq!(parse(&add, bad).unwrap_err().code, INVALID_CONFIG);
        }
    }
}
