//! Endpoints: planning (pure), wiring through the driver, connect and disconnect.

use super::*;

/// IPv4 addresses taken on `network`: sandboxes' endpoints (from the model's index), CNI
/// attachments, VM ports and the host's.
pub(super) fn addresses_on<'a>(
    state: &'a State,
    network: &str,
) -> ipam::TakenOn<'a, Ipv4Addr, foldhash::fast::FixedState> {
    let others = (state.cni.iter())
        .filter(|a| a.network == network)
        .filter_map(|a| a.ipv4)
        .chain(
            state
                .vm_ports
                .iter()
                .filter(|p| p.network == network)
                .filter_map(|p| p.ipv4),
        )
        .chain(host_access(state, network).and_then(|b| b.host_ip))
        .collect();
    ipam::TakenOn {
        sandboxes: state.sandboxes.taken_on(network).map(|t| &t.v4),
        others,
    }
}

/// The MAC of a new station with these addresses: 02:42 and its IPv4 address, or on an
/// IPv6-only network the last 32 bits of its IPv6 address (as its IPv4 twin would have).
/// IPv4 addresses are unique on a network, and so are MACs made of them; IPv6 addresses may
/// share their last 32 bits, so such a MAC is checked against the network's stations.
pub(super) fn station_mac(
    state: &State,
    network: &str,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
) -> Result<MacAddr> {
    let mac = match (ipv4, ipv6) {
        (Some(v4), _) => return Ok(MacAddr::from_ipv4(v4)),
        (None, Some(v6)) => MacAddr::from_ipv4(Ipv4Addr::from(u128::from(v6) as u32)),
        (None, None) => {
            return Err(Error::invalid(format!("network {network} has no subnet")));
        }
    };
    let taken = state.endpoints_on(network).any(|(_, e)| e.mac == Some(mac))
        || state
            .cni
            .iter()
            .any(|a| a.network == network && a.mac == mac)
        || state
            .vm_ports
            .iter()
            .any(|p| p.network == network && p.mac == mac);
    if let (true, Some(v6)) = (taken, ipv6) {
        return Err(Error::conflict(format!(
            "address {v6}: the MAC made of its last 32 bits, {mac}, is taken on network {network}"
        )));
    }
    Ok(mac)
}

/// A network's bridge options when it gives the host an interface (its addresses are taken).
fn host_access<'a>(state: &'a State, network: &str) -> Option<&'a drivers::bridge::BridgeOptions> {
    state
        .network(network)
        .and_then(|n| n.typed.as_ref())
        .and_then(|t| t.bridge.as_ref())
        .filter(|b| b.host_access)
}

/// The IPv4 and IPv6 addresses a request asks for (`--ip`, `--ip6`).
pub(super) type Wanted<'a> = (Option<&'a str>, Option<&'a str>);

/// IPv6 addresses taken on `network`, as `addresses_on` finds the IPv4 ones.
pub(super) fn addresses6_on<'a>(
    state: &'a State,
    network: &str,
) -> ipam::TakenOn<'a, std::net::Ipv6Addr, foldhash::fast::FixedState> {
    let others = (state.cni.iter())
        .filter(|a| a.network == network)
        .filter_map(|a| a.ipv6)
        .chain(
            state
                .vm_ports
                .iter()
                .filter(|p| p.network == network)
                .filter_map(|p| p.ipv6),
        )
        .chain(host_access(state, network).and_then(|b| b.host_ip6))
        .collect();
    ipam::TakenOn {
        sandboxes: state.sandboxes.taken_on(network).map(|t| &t.v6),
        others,
    }
}

/// A new endpoint of `sb` on `net`: addresses checked and chosen, nothing created yet.
pub(super) fn plan_endpoint(
    state: &State,
    sb: &Sandbox,
    net: &Network,
    ip: Option<&str>,
    ip6: Option<&str>,
    aliases: Vec<String>,
) -> Result<Endpoint> {
    for alias in &aliases {
        validate_name("alias", alias).map_err(Error::Invalid)?;
    }
    // A remote network's endpoints are addressed by tapnet's IPAM like switched ones; the
    // plugin provides the link.
    if !drivers::of(net.driver).addressed() {
        if ip.is_some() || ip6.is_some() {
            return Err(Error::invalid(format!(
                "--ip{} does not apply to network {} (driver {})",
                if ip.is_some() { "" } else { "6" },
                net.name,
                net.driver.name()
            )));
        }
        return Ok(Endpoint {
            id: new_id()?,
            network: net.name.clone(),
            interface: None,
            mac: None,
            ipv4: None,
            ipv6: None,
            aliases,
            impairment: None,
            blocked: Vec::new(),
        });
    }
    let ipv4 = match (net.subnet, net.gateway) {
        (Some(subnet), Some(gateway)) => {
            let wanted = ip.map(|s| parse_ip("address", s)).transpose()?;
            let used = addresses_on(state, &net.name);
            Some(ipam::allocate(
                subnet,
                gateway,
                net.ip_range,
                &used,
                wanted,
            )?)
        }
        _ if net.subnet6.is_none() => {
            return Err(Error::invalid(format!(
                "network {} has no subnet",
                net.name
            )));
        }
        _ if ip.is_some() => {
            return Err(Error::invalid(format!(
                "--ip: network {} has no IPv4 subnet",
                net.name
            )));
        }
        _ => None,
    };
    let ipv6 = match (net.subnet6, net.gateway6) {
        (Some(subnet), Some(gateway)) => {
            let wanted = ip6.map(|s| parse_ip6("address", s)).transpose()?;
            let used = addresses6_on(state, &net.name);
            Some(ipam6::allocate(subnet, gateway, &used, wanted)?)
        }
        _ if ip6.is_some() => {
            return Err(Error::invalid(format!(
                "--ip6: network {} has no IPv6 subnet (it was made without --ipv6)",
                net.name
            )));
        }
        _ => None,
    };
    let mac = station_mac(state, &net.name, ipv4, ipv6)?;
    Ok(Endpoint {
        id: new_id()?,
        network: net.name.clone(),
        interface: Some(next_interface(sb)),
        mac: Some(mac),
        ipv4,
        ipv6,
        aliases,
        impairment: None,
        blocked: Vec::new(),
    })
}

impl Controller {
    /// `network connect` and `network disconnect`; a plugin's network is called without the
    /// lock (`controller/remote.rs`).
    pub(super) fn endpoint_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
        match request {
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
                ip6,
            } if drivers::plugin_served(&inner.state, &network) => {
                drop(inner);
                let ips = (ip.as_deref(), ip6.as_deref());
                self.network_connect_remote(&network, &sandbox, ips, aliases)
            }
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
                ip6,
            } if inner.needs_claims(std::slice::from_ref(&network)) => {
                drop(inner);
                let ips = (ip.as_deref(), ip6.as_deref());
                self.network_connect_claimed(&network, &sandbox, ips, aliases)
            }
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                aliases,
                ip6,
            } => {
                drop(inner);
                self.network_connect(
                    &network,
                    &sandbox,
                    (ip.as_deref(), ip6.as_deref()),
                    aliases,
                    None,
                )
            }
            Request::NetworkDisconnect { network, sandbox } => {
                // Committed and the sandbox reserved under the lock; its port removed, then
                // its routes and /etc files set without it (the TAP's routes go with it).
                let (teardown, setup) = inner.network_disconnect(&network, &sandbox)?;
                drop(inner);
                teardown.run();
                let result = setup.set_routes();
                setup.refresh_etc(&sandbox);
                let view = {
                    let mut inner = self.lock();
                    inner.creating_sandboxes.retain(|s| s.name != sandbox);
                    inner.sandbox_view(&sandbox)
                };
                result?;
                value(&view?)
            }
            _ => Err(misrouted("endpoint")),
        }
    }
}

impl Controller {
    /// `network connect` of a network without a plugin: planned and the sandbox reserved (no
    /// other change to it meanwhile) under the lock, with the addresses `won` in the cluster
    /// store; the TAP made and the routes and /etc files set without it; attached and
    /// committed under it, or the TAP dropped and the routes and files put back.
    pub(super) fn network_connect(
        &self,
        network: &str,
        sandbox: &str,
        ips: Wanted<'_>,
        aliases: Vec<String>,
        won: Option<HashMap<String, std::net::IpAddr>>,
    ) -> Result<Value> {
        let (ep, net_id, plan, netns, before, after) = {
            let mut inner = self.lock();
            if let Some(won) = won {
                inner.take_claims(won);
            }
            let planned =
                inner
                    .plan_connect(network, sandbox, ips, aliases)
                    .and_then(|(sb, net, ep)| {
                        let plan = drivers::of(net.driver).plan_device(&inner.ctx(), &ep, &net)?;
                        Ok((sb, net, ep, plan))
                    });
            inner.preclaimed.clear();
            let (sb, net, ep, plan) = match planned {
                Ok(p) => p,
                Err(e) => {
                    inner.release_stale_claims();
                    return Err(e);
                }
            };
            let (before, after) = inner.plan_connect_setup(&sb, &ep);
            // The reservation: the sandbox with only the new endpoint, so that plans see its
            // address taken and other changes to the sandbox wait.
            let mut reserved = sb;
            reserved.endpoints = vec![ep.clone()];
            inner.creating_sandboxes.push(reserved);
            (
                ep,
                net.id,
                plan,
                inner.dirs.netns_path(sandbox),
                before,
                after,
            )
        };
        let device = match plan.make(&netns) {
            Ok(d) => d,
            Err(e) => {
                self.release_sandbox(sandbox);
                return Err(e);
            }
        };
        if let Err(e) = after.set_routes() {
            // The TAP goes with its fds; the routes as they were.
            drop(device);
            before.restore_routes(sandbox);
            self.release_sandbox(sandbox);
            return Err(e);
        }
        after.refresh_etc(sandbox);
        let (committed, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            let committed = inner
                .commit_connect_device(sandbox, &net_id, ep, device, &mut teardown)
                .and_then(|_| inner.sandbox_view(sandbox));
            if committed.is_ok() {
                inner.creating_sandboxes.retain(|s| s.name != sandbox);
                inner.release_stale_claims();
            }
            (committed, teardown)
        };
        teardown.run();
        if committed.is_err() {
            // Still reserved: the routes and files as they were, then the name is free.
            before.restore(sandbox);
            self.release_sandbox(sandbox);
        }
        value(&committed?)
    }
}

impl Inner {
    /// `ips`: the IPv4 and IPv6 addresses asked for (`--ip`, `--ip6`).
    pub(super) fn plan_endpoint(
        &self,
        sb: &Sandbox,
        net: &Network,
        ips: Wanted<'_>,
        aliases: Vec<String>,
    ) -> Result<Endpoint> {
        let (ip, ip6) = ips;
        self.refuse_docker_owned(&net.name)?;
        if self.deleting_networks.contains(&net.name) {
            return Err(Error::conflict(format!(
                "network {} is being removed",
                net.name
            )));
        }
        if drivers::of(net.driver).in_cluster_store() && self.cluster.is_some() {
            return self.plan_claimed(sb, net, ips, aliases);
        }
        plan_endpoint(&self.planning_state(), sb, net, ip, ip6, aliases)
    }

    /// Create the endpoint's device in the sandbox and attach it, by the network's driver.
    /// Returns the endpoint as wired: with the MAC a remote plugin chose.
    /// The network's impairments and blocks are the caller's to put on its ports
    /// (`links::sync`): the restore does it once per network after every sandbox, not once per
    /// endpoint, which was quadratic in the network's size.
    pub(super) fn wire(&mut self, sb: &Sandbox, ep: &Endpoint, net: &Network) -> Result<Endpoint> {
        let netns = self.dirs.netns_path(&sb.name);
        let mac =
            drivers::of(net.driver).setup_endpoint(&mut self.ctx(), &netns, &sb.name, ep, net)?;
        let mut wired = ep.clone();
        if mac.is_some() {
            wired.mac = mac;
        }
        Ok(wired)
    }

    /// After `links::forget` and its commit: the switch ports of those that blocked the one
    /// that left stop naming its port (port ids are reused; a create syncs only its own
    /// link's partners).
    pub(super) fn sync_forgotten(&self, forgotten: &links::Forgotten) {
        for (owner, network, _) in forgotten {
            links::sync_around(&self.state, &self.ports, &self.dp, network, owner, |n| {
                self.served_port(n)
            });
        }
    }

    /// Take the endpoint's switch port out of the maps; the teardown removes it (its TAP
    /// disappears with the last fd). (A remote plugin's side is the caller's to undo.)
    pub(super) fn unwire(&mut self, sandbox: &str, ep: &Endpoint, teardown: &mut Teardown) {
        let unwired = self.take_endpoint(sandbox, ep, false);
        teardown.endpoints.push(unwired);
        // Port ids are reused once the port is removed: partners must stop naming this one in
        // their blocks.
        links::sync_around(
            &self.state,
            &self.ports,
            &self.dp,
            &ep.network,
            sandbox,
            |n| self.served_port(n),
        );
    }

    /// Take a TAP made by others (CNI, Docker) off `network`, by its driver: the returned
    /// `Unwired` removes its port, run without the lock (it waits for every worker).
    pub(super) fn detach_tap(&mut self, network: &str, port: PortId) -> Unwired {
        match self.state.network(network).map(|n| n.driver) {
            Some(driver) => drivers::of(driver).detach_tap(&self.ctx(), port),
            None => Unwired {
                port: Some(port),
                plugin: None,
            },
        }
    }

    /// The endpoint's side, by its driver, forgotten here; removing it from the datapath and
    /// telling a plugin (with `tell`) is the caller's, without the lock (it waits for every
    /// worker, and for the plugin).
    pub(super) fn take_endpoint(&mut self, sandbox: &str, ep: &Endpoint, tell: bool) -> Unwired {
        let Some(net) = self.state.network(&ep.network).cloned() else {
            return Unwired::default();
        };
        let mut unwired = drivers::of(net.driver).take_endpoint(&mut self.ctx(), sandbox, ep, &net);
        if !tell {
            unwired.plugin = None;
        }
        unwired
    }

    /// Refuse a change to a sandbox while it is being created, or connected to or
    /// disconnected from a network.
    pub(super) fn refuse_connecting(&self, sandbox: &str) -> Result<()> {
        if self.creating_sandboxes.iter().any(|s| s.name == sandbox) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is being created, or connected to or disconnected from a network; try again"
            )));
        }
        Ok(())
    }

    /// Attach a connect's device, made from its plan, and commit the endpoint, if its network
    /// is still the one planned on; the sandbox as it is now (its links may have changed).
    fn commit_connect_device(
        &mut self,
        sandbox: &str,
        net_id: &str,
        ep: Endpoint,
        device: Device,
        teardown: &mut Teardown,
    ) -> Result<Sandbox> {
        let net = self.network_as_planned(&ep.network, net_id, &format!("sandbox {sandbox}"))?;
        let sb = self.sandbox(sandbox)?.clone();
        drivers::of(net.driver).attach_endpoint(&mut self.ctx(), sandbox, &ep, &net, device)?;
        links::sync_around(
            &self.state,
            &self.ports,
            &self.dp,
            &net.name,
            sandbox,
            |n| self.served_port(n),
        );
        self.commit_connect(&sb, ep, teardown)
    }

    /// A connect checked and its endpoint planned: nothing made yet.
    pub(super) fn plan_connect(
        &self,
        network: &str,
        sandbox: &str,
        ips: Wanted<'_>,
        aliases: Vec<String>,
    ) -> Result<(Sandbox, Network, Endpoint)> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        if self.removing.contains(sandbox) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is being removed"
            )));
        }
        self.refuse_connecting(sandbox)?;
        // A remote network's endpoint is a link the plugin makes: it joins like a bridge one.
        let joins = |net: &Network| drivers::of(net.driver).addressed();
        if !joins(&net) {
            return Err(Error::invalid(format!(
                "network {network} (driver {}) can only be chosen when a sandbox is created",
                net.driver.name()
            )));
        }
        if let Some(ep) = sb
            .endpoints
            .iter()
            .find(|e| !self.state.network(&e.network).is_some_and(joins))
        {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is on network {} and cannot join other networks",
                ep.network
            )));
        }
        if sb.endpoint(network).is_some() {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is already connected to network {network}"
            )));
        }
        let ep = self.plan_endpoint(&sb, &net, ips, aliases)?;
        Ok((sb, net, ep))
    }

    /// The routes and /etc files of `sb` before and after `ep` joins it.
    pub(super) fn plan_connect_setup(
        &self,
        sb: &Sandbox,
        ep: &Endpoint,
    ) -> (SandboxSetup, SandboxSetup) {
        let mut updated = sb.clone();
        updated.endpoints.push(ep.clone());
        (self.plan_setup(sb), self.plan_setup(&updated))
    }

    /// Add a wired endpoint to its sandbox in the model and the state file; on failure its
    /// switch port goes in the teardown and the model is as before (a remote plugin's side,
    /// and the routes and /etc files set before the commit, are the caller's to undo).
    pub(super) fn commit_connect(
        &mut self,
        sb: &Sandbox,
        ep: Endpoint,
        teardown: &mut Teardown,
    ) -> Result<Sandbox> {
        let mut updated = sb.clone();
        updated.endpoints.push(ep.clone());
        self.replace_sandbox(updated.clone());
        if let Err(e) = self.save() {
            self.unwire(&sb.name, &ep, teardown);
            self.replace_sandbox(sb.clone());
            return Err(e);
        }
        Ok(updated)
    }

    pub(super) fn replace_sandbox(&mut self, sb: Sandbox) {
        if let Some(at) = self.state.sandboxes.position(&sb.name) {
            self.state.sandboxes.replace(at, Arc::new(sb));
        }
    }

    /// The sandbox leaves the network in the model and is reserved; the returned teardown
    /// removes its port, after which the caller sets its routes and /etc files as planned
    /// and drops the reservation.
    pub(super) fn network_disconnect(
        &mut self,
        network: &str,
        sandbox: &str,
    ) -> Result<(Teardown, SandboxSetup)> {
        let net = self.network(network)?.clone();
        let sb = self.sandbox(sandbox)?.clone();
        let Some(ep) = sb.endpoint(network).cloned() else {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is not connected to network {network}"
            )));
        };
        self.refuse_connecting(sandbox)?;
        if !drivers::of(net.driver).addressed() {
            return Err(Error::invalid(format!(
                "sandbox {sandbox} cannot leave network {network} (driver {}); remove the sandbox instead",
                net.driver.name()
            )));
        }
        if let Some(port) = sb.ports.iter().find(|p| p.network == network) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} publishes {port} through network {network}; remove the sandbox to unpublish"
            )));
        }
        if self.removing.contains(sandbox) {
            return Err(Error::conflict(format!(
                "sandbox {sandbox} is being removed"
            )));
        }
        let mut updated = sb.clone();
        updated.endpoints.retain(|e| e.network != network);
        self.replace_sandbox(updated.clone());
        let forgotten = links::forget(&mut self.state, sandbox, Some(network));
        if let Err(e) = self.save() {
            self.replace_sandbox(sb);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
        self.sync_forgotten(&forgotten);
        let mut teardown = Teardown::new(self.dp.clone());
        // A remote plugin hears Leave and DeleteEndpoint when the teardown runs, unlocked.
        teardown
            .endpoints
            .push(self.take_endpoint(sandbox, &ep, true));
        // No other change to the sandbox until its routes are set: the reservation has no
        // endpoint (nothing of its is taken twice in plans).
        let mut reserved = updated.clone();
        reserved.endpoints.clear();
        self.creating_sandboxes.push(reserved);
        Ok((teardown, self.plan_setup(&updated)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str) -> Sandbox {
        Sandbox {
            name: name.into(),
            id: new_id().unwrap(),
            hostname: name.into(),
            endpoints: Vec::new(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn switched_endpoints_get_an_interface_and_the_next_free_address() {
        let state = default_state().unwrap();
        let net = state.network("bridge").cloned().unwrap();
        let mut sb = sandbox("a");
        let ep = plan_endpoint(&state, &sb, &net, None, None, Vec::new()).unwrap();
        assert_eq!(ep.interface.as_deref(), Some("eth0"));
        assert_eq!(ep.ipv4, Some(Ipv4Addr::new(172, 17, 0, 2)));
        sb.endpoints.push(ep);
        let wanted =
            plan_endpoint(&state, &sb, &net, Some("172.17.0.9"), None, Vec::new()).unwrap();
        assert_eq!(wanted.interface.as_deref(), Some("eth1"));
        assert_eq!(
            wanted.mac,
            Some(MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 9)))
        );
    }

    #[test]
    fn host_and_null_endpoints_have_no_address_and_refuse_one() {
        let state = default_state().unwrap();
        for name in ["host", "none"] {
            let net = state.network(name).cloned().unwrap();
            let ep = plan_endpoint(&state, &sandbox("a"), &net, None, None, Vec::new()).unwrap();
            assert!(ep.interface.is_none() && ep.ipv4.is_none());
            let err = plan_endpoint(
                &state,
                &sandbox("a"),
                &net,
                Some("10.0.0.2"),
                None,
                Vec::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("--ip does not apply"), "{err}");
        }
    }

    #[test]
    fn ipv6_endpoints_take_addresses_sequentially_and_honour_ip6() {
        let mut state = default_state().unwrap();
        let mut net = state.network("bridge").cloned().unwrap();
        net.name = "dual".into();
        net.builtin = false;
        net.subnet6 = Some("fd00:a::/64".parse().unwrap());
        net.gateway6 = Some("fd00:a::1".parse().unwrap());
        state.networks.push(net.clone());
        let mut a = sandbox("a");
        let ep = plan_endpoint(&state, &a, &net, None, None, Vec::new()).unwrap();
        assert_eq!(ep.ipv6, Some("fd00:a::2".parse().unwrap()));
        assert_eq!(ep.ipv4, Some(Ipv4Addr::new(172, 17, 0, 2)));
        a.endpoints.push(ep);
        state.sandboxes.push(Arc::new(a));
        let b = sandbox("b");
        let next = plan_endpoint(&state, &b, &net, None, None, Vec::new()).unwrap();
        assert_eq!(next.ipv6, Some("fd00:a::3".parse().unwrap()));
        let wanted = plan_endpoint(&state, &b, &net, None, Some("fd00:a::99"), Vec::new()).unwrap();
        assert_eq!(wanted.ipv6, Some("fd00:a::99".parse().unwrap()));
        for (ip6, want) in [
            ("fd00:a::2", "already in use"),
            ("fd00:a::1", "gateway"),
            ("fd00:b::2", "not a usable address"),
            ("10.0.0.1", "expected an IPv6 address"),
        ] {
            let err = plan_endpoint(&state, &b, &net, None, Some(ip6), Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{ip6}: {err} does not say {want}");
        }
        let plain = state.network("bridge").cloned().unwrap();
        let err = plan_endpoint(&state, &b, &plain, None, Some("fd00:a::5"), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no IPv6 subnet"), "{err}");
    }

    #[test]
    fn ipv6_only_endpoints_have_no_ipv4_and_a_mac_of_their_address() {
        let state = default_state().unwrap();
        let mut net = state.network("bridge").cloned().unwrap();
        net.name = "only".into();
        (net.subnet, net.gateway) = (None, None);
        net.subnet6 = Some("fd00:a::/64".parse().unwrap());
        net.gateway6 = Some("fd00:a::1".parse().unwrap());
        let ep = plan_endpoint(&state, &sandbox("a"), &net, None, None, Vec::new()).unwrap();
        assert_eq!(ep.ipv4, None);
        assert_eq!(ep.mac, Some(MacAddr::from_ipv4(Ipv4Addr::new(0, 0, 0, 2))));
        let err = plan_endpoint(
            &state,
            &sandbox("a"),
            &net,
            Some("10.0.0.2"),
            None,
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has no IPv4 subnet"), "{err}");
        // Another endpoint whose address ends in the same 32 bits would get the same MAC.
        let mut state = state;
        let mut a = sandbox("a");
        a.endpoints.push(ep);
        state.sandboxes.push(Arc::new(a));
        let same = Some("fd00:a::1:0:0:2");
        let err = plan_endpoint(&state, &sandbox("b"), &net, None, same, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is taken on network only"), "{err}");
        let other = Some("fd00:a::1:0:0:3");
        assert!(plan_endpoint(&state, &sandbox("b"), &net, None, other, Vec::new()).is_ok());
    }
}
