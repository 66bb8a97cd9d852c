//! Networks: create (planned by a pure function, then set up by the driver) and remove.

use super::*;

/// A new network as the request asks for it, checked against the model: nothing is created.
pub(super) fn plan_network(req: &NetworkCreate, state: &State) -> Result<Network> {
    validate_name("network", &req.name).map_err(Error::Invalid)?;
    if state.network(&req.name).is_some() {
        return Err(Error::exists("network", &req.name));
    }
    let driver = drivers::named(req.driver.as_deref().unwrap_or("bridge"))?;
    let imp = drivers::of(driver);
    imp.check_create()?;
    let plugin = match req
        .driver
        .as_deref()
        .and_then(|d| d.strip_prefix("remote:"))
    {
        Some(name) => {
            validate_name("plugin", name).map_err(Error::Invalid)?;
            Some(name.to_string())
        }
        None => None,
    };
    let mtu = req.mtu.unwrap_or(imp.default_mtu());
    validate::mtu(mtu)?;
    let vni = plan_vni(req.vni, imp.has_vni(), state)?;
    let mut options = BTreeMap::new();
    for opt in &req.options {
        let (k, v) = opt.split_once('=').ok_or_else(|| {
            Error::invalid(format!("malformed option {opt:?}: expected KEY=VALUE"))
        })?;
        if k.is_empty() {
            return Err(Error::invalid(format!(
                "malformed option {opt:?}: empty key"
            )));
        }
        options.insert(k.to_string(), v.to_string());
    }
    let typed = imp.validate(&options)?;
    let taken: Vec<(String, Ipv4Net)> = state
        .networks
        .iter()
        .filter_map(|n| n.subnet.map(|s| (n.name.clone(), s)))
        .collect();
    let gateway = req
        .gateway
        .as_deref()
        .map(|g| parse_ip("gateway", g))
        .transpose()?;
    let ip_range = req
        .ip_range
        .as_deref()
        .map(|r| parse_cidr("ip range", r))
        .transpose()?;
    let (subnet, gateway) = if req.no_ipv4 {
        if req.subnet.is_some() || gateway.is_some() || ip_range.is_some() {
            return Err(Error::invalid(
                "--no-ipv4 takes no IPv4 --subnet, --gateway or --ip-range",
            ));
        }
        (None, None)
    } else {
        let subnet = match req.subnet.as_deref() {
            Some(s) => parse_cidr("subnet", s)?,
            None => {
                if gateway.is_some() || ip_range.is_some() {
                    return Err(Error::invalid("--gateway and --ip-range need --subnet"));
                }
                let only: Vec<Ipv4Net> = taken.iter().map(|(_, s)| *s).collect();
                ipam::next_free_subnet(&only)?
            }
        };
        let gateway = ipam::plan_network(subnet, gateway, ip_range, &taken)?;
        (Some(subnet), Some(gateway))
    };
    let (subnet6, gateway6) = plan_ipv6(req, state)?;
    let typed = plan_host_access(
        &mut options,
        typed,
        imp,
        (subnet, gateway, ip_range),
        (subnet6, gateway6),
    )?;
    Ok(Network {
        name: req.name.clone(),
        id: new_id()?,
        driver,
        subnet,
        gateway,
        subnet6,
        gateway6,
        ip_range,
        internal: req.internal,
        mtu,
        vni,
        mac_aging_s: typed.mac_aging_s,
        offload: req.offload.unwrap_or(true),
        options,
        builtin: false,
        plugin,
        policy: Vec::new(),
        typed: Some(typed),
    })
}

/// A `host_access` network's host addresses: the ones its options name (checked against the
/// subnets), else the first free ones, written into the options (they persist with them) and
/// validated again.
fn plan_host_access(
    options: &mut BTreeMap<String, String>,
    typed: drivers::NetOptions,
    imp: &dyn drivers::NetworkDriver,
    (subnet, gateway, ip_range): (Option<Ipv4Net>, Option<Ipv4Addr>, Option<Ipv4Net>),
    (subnet6, gateway6): (Option<Ipv6Net>, Option<std::net::Ipv6Addr>),
) -> Result<drivers::NetOptions> {
    let Some(bridge) = typed.bridge.as_ref().filter(|b| b.host_access) else {
        return Ok(typed);
    };
    let none = HashSet::new();
    match (subnet, gateway) {
        (Some(subnet), Some(gateway)) => {
            let ip = ipam::allocate(subnet, gateway, ip_range, &none, bridge.host_ip)
                .map_err(|e| Error::invalid(format!("option host_ip: {e}")))?;
            options.insert("host_ip".into(), ip.to_string());
        }
        _ if bridge.host_ip.is_some() => {
            return Err(Error::invalid(
                "option host_ip: the network has no IPv4 subnet",
            ));
        }
        _ => {}
    }
    match (subnet6, gateway6) {
        (Some(subnet6), Some(gateway6)) => {
            let none6 = HashSet::new();
            let ip = ipam6::allocate(subnet6, gateway6, &none6, bridge.host_ip6)
                .map_err(|e| Error::invalid(format!("option host_ip6: {e}")))?;
            options.insert("host_ip6".into(), ip.to_string());
        }
        _ if bridge.host_ip6.is_some() => {
            return Err(Error::invalid(
                "option host_ip6: the network has no IPv6 subnet",
            ));
        }
        _ => {}
    }
    imp.validate(options)
}

/// The IPv6 side of a new network: none without `--ipv6`; the prefix asked for, or the next
/// free /64 of the state's ULA pool (which the caller has picked: `Inner::ensure_ula`).
fn plan_ipv6(
    req: &NetworkCreate,
    state: &State,
) -> Result<(Option<Ipv6Net>, Option<std::net::Ipv6Addr>)> {
    let gateway = req
        .gateway6
        .as_deref()
        .map(|g| parse_ip6("gateway", g))
        .transpose()?;
    let subnet = req
        .subnet6
        .as_deref()
        .map(|s| parse_cidr6("subnet", s))
        .transpose()?;
    if !req.ipv6 {
        if subnet.is_some() || gateway.is_some() {
            return Err(Error::invalid("an IPv6 --subnet or --gateway needs --ipv6"));
        }
        if req.no_ipv4 {
            return Err(Error::invalid(
                "--no-ipv4 needs --ipv6: a network needs an address family",
            ));
        }
        return Ok((None, None));
    }
    if !drivers::of(drivers::named(req.driver.as_deref().unwrap_or("bridge"))?).switched() {
        return Err(Error::invalid(format!(
            "--ipv6 applies to bridge and overlay networks only, not driver {}",
            req.driver.as_deref().unwrap_or("bridge")
        )));
    }
    let taken: Vec<(String, Ipv6Net)> = state
        .networks
        .iter()
        .filter_map(|n| n.subnet6.map(|s| (n.name.clone(), s)))
        .collect();
    let subnet = match subnet {
        Some(s) => s,
        None => {
            if gateway.is_some() {
                return Err(Error::invalid("an IPv6 --gateway needs an IPv6 --subnet"));
            }
            let pool = state.ula.ok_or_else(|| {
                Error::invalid("internal error: the daemon has no IPv6 ULA prefix yet")
            })?;
            let only: Vec<Ipv6Net> = taken.iter().map(|(_, s)| *s).collect();
            ipam6::next_free_subnet(pool, &only)?
        }
    };
    let gateway = ipam6::plan_network(subnet, gateway, &taken)?;
    Ok((Some(subnet), Some(gateway)))
}

/// The VNI of a new network: overlay networks take the one asked for (in range and not used by
/// another network here) or the lowest free from 256; other drivers have none.
fn plan_vni(wanted: Option<u32>, has_vni: bool, state: &State) -> Result<Option<u32>> {
    if let Some(vni) = wanted {
        validate::vni(vni)?;
    }
    if !has_vni {
        return match wanted {
            Some(_) => Err(Error::invalid("--vni applies to overlay networks only")),
            None => Ok(None),
        };
    }
    let owner = |vni: u32| state.networks.iter().find(|n| n.vni == Some(vni));
    match wanted {
        Some(vni) => match owner(vni) {
            Some(n) => Err(Error::conflict(format!(
                "VNI {vni} is taken by network {}",
                n.name
            ))),
            None => Ok(Some(vni)),
        },
        None => (drivers::overlay::FIRST_AUTO_VNI..=MAX_VNI)
            .find(|v| owner(*v).is_none())
            .map(Some)
            .ok_or_else(|| Error::conflict("no free VNI")),
    }
}

impl Controller {
    /// `network create`, `ls`, `inspect` and `rm`; those of a plugin's network call it
    /// without the lock (`controller/remote.rs`).
    pub(super) fn network_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
        match request {
            Request::NetworkCreate(req)
                if remote::created_outside(req.driver.as_deref(), inner.cluster.is_some()) =>
            {
                drop(inner);
                self.network_create_outside(req)
            }
            Request::NetworkCreate(req) => {
                let mut teardown = Teardown::new(inner.dp.clone());
                let view = inner
                    .network_create(req, &mut teardown)
                    .and_then(|name| inner.network_view(&name));
                drop(inner);
                teardown.run();
                value(&view?)
            }
            Request::NetworkList => {
                let views: Vec<_> = inner
                    .state
                    .networks
                    .iter()
                    .map(|n| network_view(&inner.state, n))
                    .collect();
                value(&views)
            }
            Request::NetworkInspect { name } => {
                let mut view = inner.network_view(&name)?;
                let queries = inner.network_queries(&name)?;
                drop(inner);
                queries.fill_network(&mut view);
                value(&view)
            }
            Request::NetworkRemove { name } if drivers::plugin_served(&inner.state, &name) => {
                drop(inner);
                self.network_remove_remote(&name)?;
                Ok(json!({"removed": name}))
            }
            Request::NetworkRemove { name } => {
                inner.refuse_docker_owned(&name)?;
                let teardown = inner.network_remove(&name)?;
                drop(inner);
                teardown.run();
                Ok(json!({"removed": name}))
            }
            _ => Err(misrouted("network")),
        }
    }
}

impl Inner {
    /// The model as plans see it: with the networks, sandboxes and CNI attachments being made
    /// without the lock, whose names, subnets and addresses are taken already.
    pub(super) fn planning_state(&self) -> std::borrow::Cow<'_, State> {
        if self.creating_networks.is_empty()
            && self.creating_sandboxes.is_empty()
            && self.creating_cni.is_empty()
        {
            return std::borrow::Cow::Borrowed(&self.state);
        }
        let mut state = self.state.clone();
        state
            .networks
            .extend(self.creating_networks.iter().cloned());
        state
            .sandboxes
            .extend(self.creating_sandboxes.iter().cloned().map(Arc::new));
        state.cni.extend(self.creating_cni.iter().cloned());
        std::borrow::Cow::Owned(state)
    }

    /// A network of a driver that calls out of the daemon neither for a plugin nor for the
    /// store (those are `network_create_outside`'s); what a failed commit took down goes in
    /// the teardown.
    pub(super) fn network_create(
        &mut self,
        req: NetworkCreate,
        teardown: &mut Teardown,
    ) -> Result<String> {
        self.ensure_ula(&req)?;
        let mut net = plan_network(&req, &self.planning_state())?;
        let imp = drivers::of(net.driver);
        // An overlay network keeps the VTEP it was made with, whatever a restarted daemon's
        // `--vtep` says: its peers know it by that address.
        imp.settle(&self.ctx(), &mut net);
        // Networks that call a plugin or the store are made without the lock
        // (`network_create_outside`); this path is for Docker's and CNI's bridge networks.
        if imp.plugin_served() || (imp.in_cluster_store() && self.cluster.is_some()) {
            return Err(Error::invalid(format!(
                "internal error: network {} (driver {}) is made without the controller's lock",
                net.name,
                net.driver.name()
            )));
        }
        self.commit_network(&net, teardown)?;
        Ok(net.name)
    }

    /// Pick the ULA /48 the first time a network asks for an IPv6 prefix from the pool; it
    /// is saved with the network's commit (or any later save).
    pub(super) fn ensure_ula(&mut self, req: &NetworkCreate) -> Result<()> {
        if req.ipv6 && req.subnet6.is_none() && self.state.ula.is_none() {
            self.state.ula = Some(ipam6::random_ula()?);
        }
        Ok(())
    }

    /// Add a planned network (its driver's side made) to the datapath, the model and the
    /// state file; on failure none of the three has it (the teardown stops its switch).
    pub(super) fn commit_network(&mut self, net: &Network, teardown: &mut Teardown) -> Result<()> {
        self.refuse_rootless_host_access(net)?;
        self.add_switch(net)?;
        self.state.networks.push(net.clone());
        if let Err(e) = self.save() {
            self.state.networks.pop();
            self.remove_switch(net, teardown);
            return Err(e);
        }
        Ok(())
    }

    /// `host_access=on` makes a TAP in the daemon's namespace: rootless, that is the user's own,
    /// where only CAP_NET_ADMIN of the initial user namespace may make one.
    fn refuse_rootless_host_access(&self, net: &Network) -> Result<()> {
        let host_access = net
            .typed
            .as_ref()
            .and_then(|t| t.bridge.as_ref())
            .is_some_and(|b| b.host_access);
        if host_access && matches!(self.mode, Mode::Rootless { .. }) {
            return Err(Error::invalid(format!(
                "network {}: host_access=on needs a root daemon: a rootless daemon runs in your \
                 own network namespace, where a TAP needs CAP_NET_ADMIN in the initial user \
                 namespace",
                net.name
            )));
        }
        Ok(())
    }

    /// The datapath side of a network, by its driver.
    pub(super) fn add_switch(&mut self, net: &Network) -> Result<()> {
        let imp = drivers::of(net.driver);
        imp.setup_network(&mut self.ctx(), net)?;
        if imp.in_cluster_store() {
            self.sync_cluster(&net.name);
        }
        Ok(())
    }

    /// Take a network's datapath side out of the maps; the teardown stops it.
    pub(super) fn remove_switch(&mut self, net: &Network, teardown: &mut Teardown) {
        let switch = drivers::of(net.driver).take_network(&mut self.ctx(), &net.name);
        teardown.switches.push(switch);
    }

    pub(super) fn network_remove(&mut self, name: &str) -> Result<Teardown> {
        let net = self.removable_network(name)?;
        // The driver's side first: a remote plugin that refuses keeps the network.
        let imp = drivers::of(net.driver);
        imp.delete_network(&self.plugin_dirs, &net)?;
        self.commit_network_removal(name).inspect_err(|_| {
            if let Err(redo) = imp.create_network(&self.plugin_dirs, &net) {
                eprintln!("tapnet: network {name}: undo remove: {redo}");
            }
        })
    }

    /// A network that may be removed (not built in, no endpoints, not being removed).
    pub(super) fn removable_network(&self, name: &str) -> Result<Network> {
        let net = self.network(name)?;
        if self.deleting_networks.contains(name) {
            return Err(Error::conflict(format!(
                "network {name} is being removed already"
            )));
        }
        if net.builtin {
            return Err(Error::conflict(format!(
                "network {name} is a default network and cannot be removed"
            )));
        }
        let users: Vec<String> = self
            .state
            .endpoints_on(name)
            .map(|(sb, ep)| match &ep.interface {
                Some(i) => format!("{} ({i})", sb.name),
                None => sb.name.clone(),
            })
            .collect();
        let users: Vec<String> = users
            .into_iter()
            .chain(
                self.creating_sandboxes
                    .iter()
                    .filter(|sb| sb.endpoint(name).is_some())
                    .map(|sb| format!("{} (being created)", sb.name)),
            )
            .chain(
                self.state
                    .cni
                    .iter()
                    .chain(&self.creating_cni)
                    .filter(|a| a.network == name)
                    .map(|a| format!("CNI {}/{}", a.container_id, a.ifname)),
            )
            .chain(
                self.state
                    .vm_ports
                    .iter()
                    .filter(|p| p.network == name)
                    .map(|p| format!("port {}", p.name)),
            )
            .collect();
        if !users.is_empty() {
            // A network of thousands: the first few name the kind of user, the count the rest.
            const NAMED: usize = 10;
            let more = match users.len().saturating_sub(NAMED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            return Err(Error::conflict(format!(
                "network {name} has active endpoints ({}): {}{more}",
                users.len(),
                users[..users.len().min(NAMED)].join(", ")
            )));
        }
        Ok(net.clone())
    }

    /// Take a network out of the model and the state file (its driver's side is gone); the
    /// teardown stops its datapath side. On failure the model keeps it.
    pub(super) fn commit_network_removal(&mut self, name: &str) -> Result<Teardown> {
        let index = self
            .state
            .networks
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::not_found("network", name))?;
        let removed = self.state.networks.remove(index);
        if let Err(e) = self.save() {
            self.state.networks.insert(index, removed);
            return Err(e);
        }
        // Out of the store too, unless other hosts still have endpoints on it.
        if drivers::of(removed.driver).in_cluster_store()
            && let Some(cluster) = &self.cluster
        {
            self.unstore_network(cluster, name);
        }
        let switch = drivers::of(removed.driver).take_network(&mut self.ctx(), name);
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.switches.push(switch);
        Ok(teardown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, options: &[&str]) -> NetworkCreate {
        NetworkCreate {
            name: name.to_string(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_takes_the_next_free_subnet_and_the_options() {
        let state = default_state().unwrap();
        let net = plan_network(&req("n", &["mac_aging=7"]), &state).unwrap();
        assert_eq!(net.driver, drivers::named("bridge").unwrap());
        assert_eq!(net.mac_aging_s, 7);
        assert_ne!(net.subnet, Some(DEFAULT_BRIDGE_SUBNET));
        assert_eq!(net.options.get("mac_aging").map(String::as_str), Some("7"));
    }

    #[test]
    fn host_access_plans_keep_the_hosts_addresses_in_the_options_and_ipam_skips_them() {
        let mut state = default_state().unwrap();
        let dual = |name: &str, options: &[&str]| NetworkCreate {
            subnet: Some("10.9.0.0/24".into()),
            ipv6: true,
            subnet6: Some("fd00:9::/64".into()),
            ..req(name, options)
        };
        let net = plan_network(&dual("h", &["host_access=on"]), &state).unwrap();
        assert_eq!(
            net.options.get("host_ip").map(String::as_str),
            Some("10.9.0.2")
        );
        assert_eq!(
            net.options.get("host_ip6").map(String::as_str),
            Some("fd00:9::2")
        );
        let bridge = net.typed.as_ref().and_then(|t| t.bridge.clone()).unwrap();
        assert_eq!(bridge.host_ip, Some(Ipv4Addr::new(10, 9, 0, 2)));
        state.networks.push(net);
        use crate::control::ipam::Taken;
        let used = endpoints::addresses_on(&state, "h");
        assert!(used.contains(&Ipv4Addr::new(10, 9, 0, 2)), "{used:?}");
        let used6 = endpoints::addresses6_on(&state, "h");
        assert!(used6.contains(&"fd00:9::2".parse().unwrap()), "{used6:?}");
        // Named by the user: kept when in the subnet, refused outside it or beside the gateway.
        let state = default_state().unwrap();
        let named = plan_network(
            &dual("h", &["host_access=on", "host_ip=10.9.0.200"]),
            &state,
        )
        .unwrap();
        assert_eq!(
            named.options.get("host_ip").map(String::as_str),
            Some("10.9.0.200")
        );
        for bad in ["host_ip=10.8.0.2", "host_ip=10.9.0.1"] {
            let err = plan_network(&dual("h", &["host_access=on", bad]), &state)
                .unwrap_err()
                .to_string();
            assert!(err.contains("option host_ip"), "{bad}: {err}");
        }
        // An overlay takes no host interface.
        let err = plan_network(
            &NetworkCreate {
                driver: Some("overlay".into()),
                ..req("o", &["host_access=on"])
            },
            &state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown option host_access"), "{err}");
    }

    #[test]
    fn overlay_plans_get_a_unique_vni_and_mtu_1450() {
        let mut state = default_state().unwrap();
        let overlay = |name: &str, vni: Option<u32>| NetworkCreate {
            driver: Some("overlay".into()),
            vni,
            ..req(name, &[])
        };
        let a = plan_network(&overlay("a", None), &state).unwrap();
        assert_eq!((a.vni, a.mtu), (Some(256), 1450));
        state.networks.push(a);
        let b = plan_network(&overlay("b", None), &state).unwrap();
        assert_eq!(b.vni, Some(257));
        let err = plan_network(&overlay("c", Some(256)), &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains("VNI 256 is taken by network a"), "{err}");
        for bad in [0, 1 << 24] {
            let err = plan_network(&overlay("c", Some(bad)), &state)
                .unwrap_err()
                .to_string();
            assert!(err.contains("out of range"), "{err}");
        }
        let err = plan_network(
            &NetworkCreate {
                options: vec!["peers=nowhere".into()],
                ..overlay("c", None)
            },
            &state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("option peers"), "{err}");
    }

    #[test]
    fn bad_plans_are_refused_with_their_reason() {
        let state = default_state().unwrap();
        let cases: &[(NetworkCreate, &str)] = &[
            (req("bridge", &[]), "exists"),
            (req("n", &["colour=blue"]), "unknown option colour"),
            (req("n", &["nat_udp_peers=0"]), "number > 0"),
            (
                NetworkCreate {
                    driver: Some("host".into()),
                    ..req("n", &[])
                },
                "only one network of driver host",
            ),
            (
                NetworkCreate {
                    vni: Some(5),
                    ..req("n", &[])
                },
                "overlay networks only",
            ),
        ];
        for (r, want) in cases {
            let err = plan_network(r, &state).unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not say {want}");
        }
    }

    fn v6(name: &str, subnets: (Option<&str>, Option<&str>), no_ipv4: bool) -> NetworkCreate {
        NetworkCreate {
            ipv6: true,
            no_ipv4,
            subnet: subnets.0.map(str::to_string),
            subnet6: subnets.1.map(str::to_string),
            ..req(name, &[])
        }
    }

    #[test]
    fn ipv6_plans_take_successive_64s_of_the_ula_pool() {
        let mut state = default_state().unwrap();
        let err = plan_network(&v6("a", (None, None), false), &state).unwrap_err();
        assert!(err.to_string().contains("no IPv6 ULA prefix"), "{err}");
        state.ula = Some("fd12:3456:789a::/48".parse().unwrap());
        let a = plan_network(&v6("a", (None, None), false), &state).unwrap();
        assert_eq!(a.subnet6, Some("fd12:3456:789a::/64".parse().unwrap()));
        assert_eq!(a.gateway6, Some("fd12:3456:789a::1".parse().unwrap()));
        assert!(
            a.subnet.is_some(),
            "dual-stack keeps an IPv4 subnet, as Docker"
        );
        state.networks.push(a);
        let b = plan_network(&v6("b", (None, None), false), &state).unwrap();
        assert_eq!(b.subnet6, Some("fd12:3456:789a:1::/64".parse().unwrap()));
        let plain = plan_network(&req("c", &[]), &state).unwrap();
        assert_eq!((plain.subnet6, plain.gateway6), (None, None));
    }

    #[test]
    fn ipv6_only_and_refused_ipv6_plans() {
        let state = default_state().unwrap();
        let only = plan_network(&v6("o", (None, Some("fd00:a::/64")), true), &state).unwrap();
        assert_eq!((only.subnet, only.gateway), (None, None));
        assert_eq!(only.gateway6, Some("fd00:a::1".parse().unwrap()));
        let cases: &[(NetworkCreate, &str)] = &[
            (
                NetworkCreate {
                    subnet6: Some("fd00:a::/64".into()),
                    ..req("n", &[])
                },
                "needs --ipv6",
            ),
            (
                NetworkCreate {
                    no_ipv4: true,
                    ..req("n", &[])
                },
                "--no-ipv4 needs --ipv6",
            ),
            (
                v6("n", (Some("10.9.0.0/24"), Some("fd00:a::/64")), true),
                "--no-ipv4 takes no IPv4",
            ),
            (v6("n", (None, Some("ff02::/64")), false), "multicast"),
            (v6("n", (None, Some("fd00:a::/56")), false), "/64 to /120"),
            (
                NetworkCreate {
                    driver: Some("host".into()),
                    ..v6("n", (None, Some("fd00:a::/64")), false)
                },
                "only one network of driver host",
            ),
        ];
        for (r, want) in cases {
            let err = plan_network(r, &state).unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not say {want}");
        }
    }
}
