//! Attachments for CNI runtimes (`tapnet-cni`): a TAP made inside the runtime's namespace,
//! addressed and routed there, wired to the network's switch, its fd held by the daemon (the
//! plugin process exits after each call). Persisted; a restarted daemon makes the TAP again
//! while the namespace exists.

use super::*;
use crate::cni::Attachment;
use crate::control::model::CniAttachment;
use crate::drivers::bridge::{self, Tap, TapFds};

impl Controller {
    /// CNI ADD, DEL and CHECK from `tapnet-cni`: planned and committed under the lock; ports
    /// released (DEL, or a failed ADD) without it.
    pub(super) fn cni_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
        let mut teardown = Teardown::new(inner.dp.clone());
        let answer = match request {
            Request::CniAdd {
                network,
                subnet,
                container_id,
                ifname,
                netns,
            } => inner
                .cni_add(
                    &network,
                    subnet,
                    &container_id,
                    &ifname,
                    &netns,
                    &mut teardown,
                )
                .and_then(|a| value(&a)),
            Request::CniDel {
                container_id,
                ifname,
            } => inner
                .cni_del(&container_id, &ifname, &mut teardown)
                .map(|_| json!({"removed": ifname})),
            Request::CniCheck {
                container_id,
                ifname,
            } => inner
                .cni_check(&container_id, &ifname)
                .and_then(|a| value(&a)),
            _ => Err(misrouted("CNI")),
        };
        drop(inner);
        teardown.run();
        answer
    }
}

impl Inner {
    fn cni_index(&self, container_id: &str, ifname: &str) -> Option<usize> {
        self.state
            .cni
            .iter()
            .position(|a| a.container_id == container_id && a.ifname == ifname)
    }

    fn attachment_view(&self, a: &CniAttachment) -> Result<Attachment> {
        let net = self.network(&a.network)?;
        let prefix = net.subnet.map_or(32, |s| s.prefix);
        Ok(Attachment {
            interface: a.ifname.clone(),
            mac: a.mac.to_string(),
            address: format!("{}/{prefix}", a.ipv4),
            gateway: net.gateway.filter(|_| !net.internal).map(|g| g.to_string()),
            netns: a.netns.clone(),
        })
    }

    /// Make the TAP in the namespace and wire it by the network's driver (on ADD and on
    /// restore).
    fn cni_wire(&mut self, a: &CniAttachment) -> Result<()> {
        let net = self.network(&a.network)?.clone();
        let Some(gateway) = net.gateway else {
            return Err(Error::invalid(format!(
                "network {} has no subnet",
                net.name
            )));
        };
        if !self.nets.contains_key(&net.name) {
            return Err(Error::not_found("network", &net.name));
        }
        let netns = std::path::Path::new(&a.netns);
        let ctx = self.ctx();
        let spec = bridge::tap_spec(&ctx, &net, a.ifname.clone(), a.mac, Some(a.ipv4), None)?;
        let fds = wiring::create_tap(netns, spec).map_err(|e| match e {
            // Never an interface the runtime or anyone else made (see `open_tap_queues`).
            Error::AlreadyExists {
                kind: "interface", ..
            } => Error::conflict(crate::cni::ifname_taken(&a.ifname, &a.netns)),
            e => e,
        })?;
        let route = (!net.internal).then(|| (gateway, a.ifname.clone()));
        // The fds close (and the TAP goes) if routing fails.
        wiring::set_default_route(netns, route)?;
        let port = drivers::of(net.driver).attach_tap(
            &ctx,
            &net,
            Tap {
                label: format!("cni:{}/{}", short(&a.container_id), a.ifname),
                mac: a.mac,
                ipv4: a.ipv4,
                fds: TapFds::Queues(fds),
            },
        )?;
        self.cni_ports
            .insert((a.container_id.clone(), a.ifname.clone()), port);
        Ok(())
    }

    pub(super) fn cni_add(
        &mut self,
        network: &str,
        subnet: Option<String>,
        container_id: &str,
        ifname: &str,
        netns: &str,
        teardown: &mut Teardown,
    ) -> Result<Attachment> {
        crate::cni::validate_container_id(container_id).map_err(Error::invalid)?;
        crate::cni::validate_ifname(ifname).map_err(Error::invalid)?;
        if !netns.starts_with('/') {
            return Err(Error::invalid(format!(
                "CNI ADD needs an absolute namespace path, not {netns:?}"
            )));
        }
        if let Some(i) = self.cni_index(container_id, ifname) {
            let a = self.state.cni[i].clone();
            if a.netns == netns && a.network == network {
                return self.attachment_view(&a);
            }
            return Err(Error::conflict(format!(
                "container {container_id} already has {ifname} on network {}",
                a.network
            )));
        }
        let mut created_network = false;
        if self.state.network(network).is_none() {
            let Some(subnet) = subnet else {
                return Err(Error::not_found("network", network));
            };
            self.network_create(
                NetworkCreate {
                    name: network.to_string(),
                    subnet: Some(subnet),
                    ..NetworkCreate::default()
                },
                teardown,
            )?;
            created_network = true;
        }
        let result = self.cni_attach(network, container_id, ifname, netns, teardown);
        if result.is_err() && created_network {
            if let Ok(t) = self.network_remove(network) {
                teardown.absorb(t);
            }
        }
        result
    }

    fn cni_attach(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        netns: &str,
        teardown: &mut Teardown,
    ) -> Result<Attachment> {
        self.refuse_docker_owned(network)?;
        let net = self.network(network)?.clone();
        if !drivers::of(net.driver).takes_taps() {
            return Err(Error::invalid(format!(
                "network {network} (driver {}) takes no CNI attachments",
                net.driver.name()
            )));
        }
        let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
            return Err(Error::invalid(format!("network {network} has no subnet")));
        };
        let used: HashSet<Ipv4Addr> = endpoints::addresses_on(&self.state, network);
        let ipv4 = ipam::allocate(subnet, gateway, net.ip_range, &used, None)?;
        let a = CniAttachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_string(),
            network: network.to_string(),
            ipv4,
            mac: MacAddr::from_ipv4(ipv4),
        };
        self.cni_wire(&a)?;
        self.state.cni.push(a.clone());
        if let Err(e) = self.save() {
            self.state.cni.pop();
            if let Some(port) = self
                .cni_ports
                .remove(&(a.container_id.clone(), a.ifname.clone()))
            {
                let unwired = self.detach_tap(&a.network, port);
                teardown.endpoints.push(unwired);
            }
            return Err(e);
        }
        self.attachment_view(&a)
    }

    /// The attachment out of the model and its port out of the maps: the teardown removes
    /// the port. A DEL meanwhile finds nothing left, as after the first one.
    pub(super) fn cni_del(
        &mut self,
        container_id: &str,
        ifname: &str,
        teardown: &mut Teardown,
    ) -> Result<()> {
        let Some(i) = self.cni_index(container_id, ifname) else {
            return Ok(());
        };
        let removed = self.state.cni.remove(i);
        if let Err(e) = self.save() {
            self.state.cni.insert(i, removed);
            return Err(e);
        }
        if let Some(port) = self
            .cni_ports
            .remove(&(container_id.to_string(), ifname.to_string()))
        {
            let unwired = self.detach_tap(&removed.network, port);
            teardown.endpoints.push(unwired);
        }
        Ok(())
    }

    pub(super) fn cni_check(&self, container_id: &str, ifname: &str) -> Result<Attachment> {
        let i = self.cni_index(container_id, ifname).ok_or_else(|| {
            Error::not_found("CNI attachment", format!("{container_id}/{ifname}"))
        })?;
        let a = &self.state.cni[i];
        if !self
            .cni_ports
            .contains_key(&(a.container_id.clone(), a.ifname.clone()))
        {
            return Err(Error::conflict(format!(
                "{container_id}/{ifname} has no switch port"
            )));
        }
        if !wiring::link_exists_in(std::path::Path::new(&a.netns), ifname) {
            return Err(Error::conflict(format!(
                "{ifname} is missing from namespace {}",
                a.netns
            )));
        }
        self.attachment_view(a)
    }

    /// After a restart: make the TAPs again in namespaces that still exist.
    pub(super) fn restore_cni(&mut self) {
        for a in self.state.cni.clone() {
            if !std::path::Path::new(&a.netns).exists() {
                eprintln!(
                    "tapnet: CNI attachment {}/{}: namespace {} is gone",
                    a.container_id, a.ifname, a.netns
                );
                continue;
            }
            if let Err(e) = self.cni_wire(&a) {
                eprintln!(
                    "tapnet: cannot restore CNI attachment {}/{}: {e}",
                    a.container_id, a.ifname
                );
            }
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
