//! Topology files (`tapnet up FILE`, `tapnet down FILE`): networks, sandboxes with a command
//! each, VMs' ports, impaired links and blocks, in TOML. This module is the file's model and its checks;
//! `plan` computes what to change (pure), `apply` carries a plan out through the daemon.

pub(crate) mod apply;
pub mod plan;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::control::model::validate_name;
use crate::datapath::impair::{Impairment, parse_duration, parse_percent, parse_rate};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Names the record of what `up` made; the file's stem by default.
    pub name: Option<String>,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkSpec>,
    #[serde(default, rename = "sandbox")]
    pub sandboxes: Vec<SandboxSpec>,
    /// VMs' ports (`tapnet port add`).
    #[serde(default, rename = "port")]
    pub ports: Vec<PortSpec>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    #[serde(default, rename = "block")]
    pub blocks: Vec<BlockSpec>,
    /// Policy rules (`tapnet policy`), in order per network: `up` makes each listed network's
    /// rules exactly these.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyRuleSpec>,
}

/// One `[[policy]]` rule: `network`, `name`, optional `from`, `to`, `proto`, `port`, and
/// `action` (`allow` or `deny`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRuleSpec {
    pub network: String,
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(default)]
    pub proto: crate::datapath::policy::Proto,
    /// `N` or `N-M`, as a string or a number.
    pub port: Option<toml::Value>,
    pub action: crate::control::policy::Action,
}

impl PolicyRuleSpec {
    /// The rule as `policy add` takes it.
    pub fn rule(&self) -> crate::control::policy::PolicyRule {
        crate::control::policy::PolicyRule {
            name: self.name.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            proto: self.proto,
            port: self.port.as_ref().map(|p| match p {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            action: self.action,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    /// `bridge` (the default) or `overlay`.
    pub driver: Option<String>,
    /// The VXLAN network identifier of an overlay network.
    pub vni: Option<u32>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    pub mtu: Option<u32>,
    pub offload: Option<bool>,
    /// Dual-stack: an IPv6 prefix too, `subnet6` or one from the daemon's ULA pool.
    #[serde(default)]
    pub ipv6: bool,
    /// `ipv4 = false` with `ipv6`/`subnet6`: an IPv6-only network (`--no-ipv4`).
    pub ipv4: Option<bool>,
    pub subnet6: Option<String>,
    pub gateway6: Option<String>,
    /// Driver options (`mac_aging`, `nat_udp_timeout`, overlay's `vtep` and `peers`), as
    /// `--opt KEY=VALUE`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    pub name: String,
    /// In order: the first carries the default route.
    pub networks: Vec<String>,
    /// Addresses by network; others are allocated.
    #[serde(default)]
    pub ip: BTreeMap<String, String>,
    /// IPv6 addresses by network (dual-stack networks); others are allocated.
    #[serde(default)]
    pub ip6: BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// `[HOSTIP:]HOSTPORT:PORT[/udp]`, through the first network.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Run with `sh -c` inside the sandbox, detached, output to a log in the state dir.
    pub command: Option<String>,
}

/// One `[[port]]`: a port that is not a sandbox's TAP, as `tapnet port add` makes it. Exactly
/// one of `qemu_socket`, `vhost_user` and `iface`; a relative socket path is the file's
/// directory's (resolved when the file is loaded, see `apply::load`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub network: String,
    /// The unix stream socket the daemon listens on for QEMU's `-netdev stream`.
    pub qemu_socket: Option<String>,
    /// A unix socket the daemon serves as a vhost-user-net backend.
    pub vhost_user: Option<String>,
    /// An existing interface of the daemon's namespace (root daemon).
    pub iface: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    /// `[HOSTIP:]HOSTPORT:PORT[/udp]`, forwarded to the VM by its network's gateway.
    #[serde(default)]
    pub publish: Vec<String>,
}

impl PortSpec {
    /// The port's kind as `port ls` names it ("qemu-socket", "vhost-user", "iface") and its
    /// socket path or interface; None unless exactly one is given.
    pub fn kind(&self) -> Option<(&'static str, &str)> {
        match (&self.qemu_socket, &self.vhost_user, &self.iface) {
            (Some(p), None, None) => Some(("qemu-socket", p)),
            (None, Some(p), None) => Some(("vhost-user", p)),
            (None, None, Some(i)) => Some(("iface", i)),
            _ => None,
        }
    }

    /// The socket path, for the socket kinds.
    pub fn socket_mut(&mut self) -> Option<&mut String> {
        self.qemu_socket.as_mut().or(self.vhost_user.as_mut())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// A sandbox of the file, or a `[[port]]` of it.
    pub sandbox: String,
    pub network: String,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    pub duplicate: Option<String>,
    pub corrupt: Option<String>,
    pub reorder: Option<String>,
    pub rate: Option<String>,
    #[serde(default)]
    pub down: bool,
    pub seed: Option<u64>,
    #[serde(default)]
    pub both: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    pub a: String,
    pub b: String,
    /// Every network the two share when absent.
    pub network: Option<String>,
}

impl NetworkSpec {
    /// `ipv6 = true`, or an IPv6 prefix given.
    pub fn wants_ipv6(&self) -> bool {
        self.ipv6 || self.subnet6.is_some()
    }

    pub fn wants_ipv4(&self) -> bool {
        self.ipv4 != Some(false)
    }
}

impl LinkSpec {
    /// The impairment the link asks for, with every unit parsed and checked.
    pub fn impairment(&self) -> Result<Impairment, String> {
        let d = |v: &Option<String>| v.as_deref().map(parse_duration).transpose();
        let p = |v: &Option<String>| v.as_deref().map(parse_percent).transpose();
        let imp = Impairment {
            delay_us: d(&self.delay)?.unwrap_or(0),
            jitter_us: d(&self.jitter)?.unwrap_or(0),
            loss_ppm: p(&self.loss)?.unwrap_or(0),
            duplicate_ppm: p(&self.duplicate)?.unwrap_or(0),
            corrupt_ppm: p(&self.corrupt)?.unwrap_or(0),
            reorder_ppm: p(&self.reorder)?.unwrap_or(0),
            rate_bps: self
                .rate
                .as_deref()
                .map(parse_rate)
                .transpose()?
                .unwrap_or(0),
            down: self.down,
            seed: self.seed,
            both: self.both,
        };
        imp.validate()?;
        Ok(imp)
    }
}

impl Topology {
    /// Parse and check a topology file's text. `stem` names it when it has no `name`.
    pub fn parse(text: &str, stem: &str) -> Result<Topology, String> {
        let mut topo: Topology = toml::from_str(text).map_err(|e| {
            // toml's messages span several lines (with a source excerpt): keep the first.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {}", e.message().replace('\n', " "))
                }
                None => first,
            }
        })?;
        if topo.name.is_none() {
            topo.name = Some(stem.to_string());
        }
        topo.check()?;
        Ok(topo)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("topology")
    }

    /// Names are valid and unique; every reference points at something the file declares (a
    /// sandbox may also join a network that exists already, `bridge` for one).
    fn check(&self) -> Result<(), String> {
        validate_name("topology", self.name())?;
        let mut nets = HashSet::new();
        for n in &self.networks {
            validate_name("network", &n.name)?;
            if !nets.insert(n.name.as_str()) {
                return Err(format!("network {} is declared twice", n.name));
            }
            if n.subnet6.is_none() && n.gateway6.is_some() {
                return Err(format!("network {}: gateway6 needs subnet6", n.name));
            }
            if ["bridge", "host", "none"].contains(&n.name.as_str()) {
                return Err(format!(
                    "network {} is a default network: use it without declaring it",
                    n.name
                ));
            }
        }
        let mut sbs = HashSet::new();
        for s in &self.sandboxes {
            validate_name("sandbox", &s.name)?;
            if !sbs.insert(s.name.as_str()) {
                return Err(format!("sandbox {} is declared twice", s.name));
            }
            if s.networks.is_empty() {
                return Err(format!("sandbox {} joins no network", s.name));
            }
            let mut seen = HashSet::new();
            for n in &s.networks {
                if !seen.insert(n) {
                    return Err(format!("sandbox {} joins network {n} twice", s.name));
                }
            }
            if let Some(n) =
                s.ip.keys()
                    .chain(s.ip6.keys())
                    .find(|n| !s.networks.contains(n))
            {
                return Err(format!(
                    "sandbox {}: address given for network {n}, which it does not join",
                    s.name
                ));
            }
        }
        let mut ports = HashSet::new();
        for p in &self.ports {
            validate_name("port", &p.name)?;
            if !ports.insert(p.name.as_str()) {
                return Err(format!("port {} is declared twice", p.name));
            }
            if sbs.contains(p.name.as_str()) {
                return Err(format!(
                    "port {}: a sandbox of the file has that name (ports and sandboxes share names)",
                    p.name
                ));
            }
            validate_name("network", &p.network).map_err(|e| format!("port {}: {e}", p.name))?;
            match p.kind() {
                None => {
                    return Err(format!(
                        "port {} needs exactly one of qemu_socket, vhost_user and iface",
                        p.name
                    ));
                }
                Some((_, "")) => {
                    return Err(format!("port {}: an empty path or interface", p.name));
                }
                Some(_) => {}
            }
            if let Some(ip) = &p.ip
                && ip.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err(format!("port {}: ip {ip:?} is not an IPv4 address", p.name));
            }
            if let Some(ip) = &p.ip6
                && ip.parse::<std::net::Ipv6Addr>().is_err()
            {
                return Err(format!(
                    "port {}: ip6 {ip:?} is not an IPv6 address",
                    p.name
                ));
            }
            if let Some(mac) = &p.mac
                && mac.parse::<crate::wire::MacAddr>().is_err()
            {
                return Err(format!("port {}: mac {mac:?} is not a MAC address", p.name));
            }
        }
        let mut rules = HashSet::new();
        for p in &self.policies {
            validate_name("network", &p.network)?;
            crate::control::policy::check_rule(&p.rule())
                .map_err(|e| format!("policy {} on {}: {e}", p.name, p.network))?;
            if !rules.insert((&p.network, &p.name)) {
                return Err(format!("policy {} on {} is given twice", p.name, p.network));
            }
        }
        let sandbox = |name: &str| self.sandboxes.iter().find(|s| s.name == name);
        let mut links = HashSet::new();
        for l in &self.links {
            if let Some(p) = self.ports.iter().find(|p| p.name == l.sandbox) {
                if p.network != l.network {
                    return Err(format!(
                        "link: port {} is on network {}, not {}",
                        l.sandbox, p.network, l.network
                    ));
                }
            } else if let Some(s) = sandbox(&l.sandbox) {
                if !s.networks.contains(&l.network) {
                    return Err(format!(
                        "link: sandbox {} does not join network {}",
                        l.sandbox, l.network
                    ));
                }
            } else {
                return Err(format!(
                    "link: no sandbox or port {} in the file",
                    l.sandbox
                ));
            }
            if !links.insert((&l.sandbox, &l.network)) {
                return Err(format!("link {} {} is given twice", l.sandbox, l.network));
            }
            l.impairment()
                .map_err(|e| format!("link {} {}: {e}", l.sandbox, l.network))?;
        }
        for b in &self.blocks {
            let of_file = |n: &str| sandbox(n).is_some() || self.ports.iter().any(|p| p.name == n);
            if !of_file(&b.a) || !of_file(&b.b) {
                return Err(format!(
                    "block {} {}: both must be sandboxes or ports of the file",
                    b.a, b.b
                ));
            }
            if b.a == b.b {
                return Err(format!("block {} {}: a sandbox with itself", b.a, b.b));
            }
            let shared = self.block_networks(b);
            if shared.is_empty() {
                return Err(format!(
                    "block {} {}: they share no network{}",
                    b.a,
                    b.b,
                    b.network
                        .as_ref()
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// The networks a block applies to: the one named, or every network both ends (sandboxes or
    /// ports) are on.
    pub fn block_networks(&self, b: &BlockSpec) -> Vec<String> {
        let nets = |name: &str| match self.sandboxes.iter().find(|s| s.name == name) {
            Some(s) => s.networks.clone(),
            None => self
                .ports
                .iter()
                .filter(|p| p.name == name)
                .map(|p| p.network.clone())
                .collect(),
        };
        let (na, nb) = (nets(&b.a), nets(&b.b));
        na.into_iter()
            .filter(|n| nb.contains(n) && b.network.as_ref().is_none_or(|w| w == n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules_parse_and_are_checked() {
        let text = r#"
[[network]]
name = "n"

[[policy]]
network = "n"
name = "web"
from = "client"
to = "10.70.0.0/24"
proto = "tcp"
port = 80
action = "allow"

[[policy]]
network = "n"
name = "rest"
action = "deny"
"#;
        let t = Topology::parse(text, "p").unwrap();
        let rule = t.policies[0].rule();
        assert_eq!(rule.port.as_deref(), Some("80"));
        assert_eq!(rule.proto, crate::datapath::policy::Proto::Tcp);
        assert_eq!(
            t.policies[1].rule().action,
            crate::control::policy::Action::Deny
        );
        let twice =
            format!("{text}\n[[policy]]\nnetwork = \"n\"\nname = \"rest\"\naction = \"allow\"\n");
        assert!(Topology::parse(&twice, "p").unwrap_err().contains("twice"));
        let bad = text.replace("port = 80", "port = 80\nbogus = 1");
        assert!(Topology::parse(&bad, "p").is_err());
        let no_proto = text.replace("proto = \"tcp\"", "");
        assert!(
            Topology::parse(&no_proto, "p")
                .unwrap_err()
                .contains("--proto")
        );
    }

    const LAB: &str = r#"
name = "lab"

[[network]]
name = "lab"
subnet = "10.70.0.0/24"

[[sandbox]]
name = "client"
networks = ["lab"]
ip = { lab = "10.70.0.2" }

[[sandbox]]
name = "server"
networks = ["lab"]
command = "sleep 1000"

[[link]]
sandbox = "server"
network = "lab"
delay = "20ms"
loss = "1%"

[[block]]
a = "client"
b = "server"
"#;

    #[test]
    fn parses_a_lab() {
        let t = Topology::parse(LAB, "x").expect("valid");
        assert_eq!(t.name(), "lab");
        assert_eq!(t.sandboxes[1].command.as_deref(), Some("sleep 1000"));
        let imp = t.links[0].impairment().expect("impairment");
        assert_eq!((imp.delay_us, imp.loss_ppm), (20_000, 10_000));
        assert_eq!(t.block_networks(&t.blocks[0]), vec!["lab".to_string()]);
        let unnamed = Topology::parse("", "stem").expect("empty is valid");
        assert_eq!(unnamed.name(), "stem");
    }

    #[test]
    fn parses_ports_and_their_links() {
        let text = "[[network]]\nname = \"n\"\n[[port]]\nname = \"vm\"\nnetwork = \"n\"\n\
                    vhost_user = \"vm.sock\"\nip = \"10.1.0.5\"\nmac = \"02:00:00:00:00:05\"\n\
                    [[link]]\nsandbox = \"vm\"\nnetwork = \"n\"\nloss = \"1%\"\n";
        let t = Topology::parse(text, "x").expect("valid");
        assert_eq!(t.ports[0].kind(), Some(("vhost-user", "vm.sock")));
        assert_eq!(t.links[0].sandbox, "vm");
    }

    #[test]
    fn the_examples_parse() {
        let examples = [
            include_str!("../../examples/seed.toml"),
            include_str!("../../examples/impaired-lab.toml"),
            include_str!("../../examples/overlay-host1.toml"),
            include_str!("../../examples/overlay-host2.toml"),
            include_str!("../../examples/dual-stack.toml"),
            include_str!("../../examples/vm-lab.toml"),
        ];
        for text in examples {
            Topology::parse(text, "example").expect("a valid example");
        }
        let vm = Topology::parse(include_str!("../../examples/vm-lab.toml"), "x").expect("valid");
        assert_eq!(
            vm.ports[0].kind(),
            Some(("qemu-socket", "/tmp/tapnet-vm-lab.sock"))
        );
        assert_eq!(vm.links[0].sandbox, "vm1");
    }

    #[test]
    fn parses_dual_stack() {
        let text = "[[network]]\nname = \"d\"\nsubnet6 = \"fd00:1::/64\"\n[[network]]\n\
                    name = \"e\"\nipv6 = true\n[[sandbox]]\nname = \"s\"\n\
                    networks = [\"d\", \"e\"]\nip6 = { d = \"fd00:1::5\" }\n";
        let t = Topology::parse(text, "x").expect("valid");
        assert!(t.networks[0].wants_ipv6() && t.networks[1].wants_ipv6());
        assert_eq!(
            t.sandboxes[0].ip6.get("d").map(String::as_str),
            Some("fd00:1::5")
        );
        let plain = Topology::parse("[[network]]\nname = \"p\"\n", "x").expect("valid");
        assert!(!plain.networks[0].wants_ipv6());
    }

    #[test]
    fn refuses_bad_files_with_one_line() {
        let cases = [
            ("[[network]]\nname = \"n\"\nsubnett = \"x\"\n", "line 3"),
            (
                "[[sandbox]]\nname = \"s\"\nnetworks = []\n",
                "joins no network",
            ),
            (
                "[[sandbox]]\nname = \"s\"\nnetworks = [\"bridge\"]\nip = { x = \"1.2.3.4\" }\n",
                "does not join",
            ),
            (
                "[[sandbox]]\nname = \"s\"\nnetworks = [\"bridge\"]\n[[link]]\nsandbox = \"s\"\nnetwork = \"bridge\"\nloss = \"200%\"\n",
                "link s bridge",
            ),
            (
                "[[link]]\nsandbox = \"nobody\"\nnetwork = \"bridge\"\n",
                "no sandbox or port nobody",
            ),
            ("[[network]]\nname = \"bridge\"\n", "default network"),
            ("[[network]]\nname = \"bad name\"\n", "invalid network name"),
            ("name = 3\n", "line 1"),
            (
                "[[network]]\nname = \"n\"\nipv6 = true\ngateway6 = \"fd00::1\"\n",
                "gateway6 needs subnet6",
            ),
            (
                "[[sandbox]]\nname = \"s\"\nnetworks = [\"bridge\"]\nip6 = { x = \"fd00::2\" }\n",
                "does not join",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\n",
                "port p needs exactly one of qemu_socket, vhost_user and iface",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\nqemu_socket = \"a\"\niface = \"eth0\"\n",
                "needs exactly one",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"eth0\"\nsocket = \"x\"\n",
                "line 5",
            ),
            (
                "[[port]]\nname = \"bad name\"\nnetwork = \"bridge\"\niface = \"eth0\"\n",
                "invalid port name",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"e\"\n\
                 [[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"f\"\n",
                "port p is declared twice",
            ),
            (
                "[[sandbox]]\nname = \"s\"\nnetworks = [\"bridge\"]\n\
                 [[port]]\nname = \"s\"\nnetwork = \"bridge\"\niface = \"e\"\n",
                "port s: a sandbox of the file has that name",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"e\"\nip = \"10.0.0\"\n",
                "port p: ip \"10.0.0\" is not an IPv4 address",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"e\"\nip6 = \"10.0.0.1\"\n",
                "is not an IPv6 address",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\niface = \"e\"\nmac = \"02:00\"\n",
                "is not a MAC address",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"bridge\"\nqemu_socket = \"\"\n",
                "empty path",
            ),
            (
                "[[port]]\nname = \"p\"\nnetwork = \"n\"\niface = \"e\"\n\
                 [[link]]\nsandbox = \"p\"\nnetwork = \"bridge\"\n",
                "link: port p is on network n, not bridge",
            ),
        ];
        for (text, want) in cases {
            let err = Topology::parse(text, "t").expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
