//! Networks: create (planned by a pure function, then set up by the driver) and remove.

use super::*;

/// A new network as the request asks for it, checked against the model: nothing is created.
pub(super) fn plan_network(req: &NetworkCreate, state: &State) -> Result<Network> {
    validate_name("network", &req.name).map_err(Error::Invalid)?;
    if state.network(&req.name).is_some() {
        return Err(Error::exists("network", &req.name));
    }
    let driver =
        Driver::parse(req.driver.as_deref().unwrap_or("bridge")).map_err(Error::Invalid)?;
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
    let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Error::invalid(format!(
            "MTU {mtu} is out of range ({MIN_MTU}-{MAX_MTU})"
        )));
    }
    if let Some(vni) = req.vni {
        if vni == 0 || vni > MAX_VNI {
            return Err(Error::invalid(format!(
                "VNI {vni} is out of range (1-{MAX_VNI})"
            )));
        }
        return Err(Error::invalid("--vni applies to overlay networks only"));
    }
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
    imp.check_options(&options)?;
    let mac_aging_s = BridgeOptions::parse(&options)?.mac_aging_s;
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
    Ok(Network {
        name: req.name.clone(),
        id: new_id(),
        driver,
        subnet: Some(subnet),
        gateway: Some(gateway),
        ip_range,
        internal: req.internal,
        mtu,
        vni: None,
        mac_aging_s,
        offload: req.offload.unwrap_or(true),
        options,
        builtin: false,
        plugin,
    })
}

impl Inner {
    pub(super) fn network_create(&mut self, req: NetworkCreate) -> Result<String> {
        let net = plan_network(&req, &self.state)?;
        let imp = drivers::of(net.driver);
        imp.create_network(&self.ctx(), &net)?;
        // Undo what the driver's side (a remote plugin) made when a later step fails.
        let undo = |this: &mut Self, e: Error| {
            if let Err(undo) = imp.delete_network(&this.ctx(), &net) {
                eprintln!("tapnet: network {}: undo create: {undo}", net.name);
            }
            e
        };
        if let Err(e) = self.add_switch(&net) {
            return Err(undo(self, e));
        }
        self.state.networks.push(net.clone());
        if let Err(e) = self.save() {
            self.state.networks.pop();
            self.remove_switch(&net.name);
            return Err(undo(self, e));
        }
        Ok(net.name)
    }

    /// The datapath side of a network, by its driver.
    pub(super) fn add_switch(&mut self, net: &Network) -> Result<()> {
        drivers::of(net.driver).setup_network(&mut self.ctx(), net)
    }

    pub(super) fn remove_switch(&mut self, name: &str) {
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.switches.push(self.take_switch(name));
        teardown.run();
    }

    /// A network's gateway and datapath id, forgotten here; the teardown stops them.
    pub(super) fn take_switch(&mut self, name: &str) -> Switch {
        let driver = self
            .state
            .network(name)
            .map_or(Driver::Bridge, |n| n.driver);
        drivers::of(driver).take_network(&mut self.ctx(), name)
    }

    pub(super) fn network_remove(&mut self, name: &str) -> Result<Teardown> {
        let net = self.network(name)?;
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
                self.state
                    .cni
                    .iter()
                    .filter(|a| a.network == name)
                    .map(|a| format!("CNI {}/{}", a.container_id, a.ifname)),
            )
            .collect();
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "network {name} has active endpoints: {}",
                users.join(", ")
            )));
        }
        let index = self
            .state
            .networks
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::not_found("network", name))?;
        // The driver's side first: a remote plugin that refuses keeps the network.
        let imp = drivers::of(self.state.networks[index].driver);
        let net = self.state.networks[index].clone();
        imp.delete_network(&self.ctx(), &net)?;
        let removed = self.state.networks.remove(index);
        if let Err(e) = self.save() {
            self.state.networks.insert(index, removed);
            if let Err(redo) = imp.create_network(&self.ctx(), &net) {
                eprintln!("tapnet: network {name}: undo remove: {redo}");
            }
            return Err(e);
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
        let state = default_state();
        let net = plan_network(&req("n", &["mac_aging=7"]), &state).unwrap();
        assert_eq!(net.driver, Driver::Bridge);
        assert_eq!(net.mac_aging_s, 7);
        assert_ne!(net.subnet, Some(DEFAULT_BRIDGE_SUBNET));
        assert_eq!(net.options.get("mac_aging").map(String::as_str), Some("7"));
    }

    #[test]
    fn bad_plans_are_refused_with_their_reason() {
        let state = default_state();
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
}
