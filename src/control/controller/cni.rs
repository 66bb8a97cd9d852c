//! Attachments for CNI runtimes (`tapnet-cni`): a TAP made inside the runtime's namespace,
//! addressed and routed there, wired to the network's switch, its fd held by the daemon (the
//! plugin process exits after each call). On a dual-stack network the TAP gets an IPv6 address
//! and `::/0` route too. Persisted; a restarted daemon makes the TAP again
//! while the namespace exists.

use super::*;
use crate::cni::{Attachment, Subnets};
use crate::control::model::CniAttachment;
use crate::drivers::bridge::{self, Tap, TapFds};

impl Controller {
    /// CNI ADD, DEL and CHECK from `tapnet-cni`: planned and committed under the lock; the TAP
    /// made (ADD), ports released (DEL, or a failed ADD) and the link looked for (CHECK)
    /// without it.
    pub(super) fn cni_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
        if let Request::CniAdd {
            network,
            subnet,
            container_id,
            ifname,
            netns,
            gateway,
            subnet6,
            gateway6,
        } = request
        {
            drop(inner);
            let subnets = Subnets {
                subnet,
                gateway,
                subnet6,
                gateway6,
            };
            return self
                .cni_add(&network, subnets, &container_id, &ifname, &netns)
                .and_then(|a| value(&a));
        }
        if let Request::CniCheck {
            container_id,
            ifname,
        } = &request
        {
            // The link is looked for in the runtime's namespace without the lock.
            let checked = inner.cni_check(container_id, ifname);
            drop(inner);
            let (view, netns) = checked?;
            if !wiring::link_exists_in(std::path::Path::new(&netns), ifname) {
                return Err(Error::conflict(format!(
                    "{ifname} is missing from namespace {netns}"
                )));
            }
            return value(&view);
        }
        let mut teardown = Teardown::new(inner.dp.clone());
        let answer = match request {
            Request::CniDel {
                container_id,
                ifname,
            } => inner
                .cni_del(&container_id, &ifname, &mut teardown)
                .map(|_| json!({"removed": ifname})),
            Request::CniGc { network, valid } => inner
                .cni_gc(&network, &valid, &mut teardown)
                .map(|removed| json!({"removed": removed})),
            _ => Err(misrouted("CNI")),
        };
        drop(inner);
        teardown.run();
        answer
    }

    /// CNI ADD: the attachment planned and reserved under the lock (the network made first if
    /// the configuration gives a subnet), its TAP made and routed in the runtime's namespace
    /// without it, attached and committed under it; on failure the TAP goes, and the network
    /// if this ADD made it.
    fn cni_add(
        &self,
        network: &str,
        subnets: Subnets,
        container_id: &str,
        ifname: &str,
        netns: &str,
    ) -> Result<Attachment> {
        // On an overlay network with a store, the addresses are claimed cluster-wide first.
        let won = self.claim_cni(network, container_id, ifname)?;
        let (reserved, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            inner.take_claims(won);
            let r = inner.reserve_cni(network, subnets, container_id, ifname, netns, &mut teardown);
            inner.preclaimed.clear();
            // A claim its reservation did not take goes back (the reservation keeps its own).
            inner.release_stale_claims();
            (r, teardown)
        };
        teardown.run();
        let r = match reserved? {
            CniAdd::Exists(view) => return Ok(view),
            CniAdd::New(r) => r,
        };
        let made = cni_make(&r.a, r.plan);
        let (answer, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            inner
                .creating_cni
                .retain(|c| !(c.container_id == container_id && c.ifname == ifname));
            let answer = made.and_then(|fds| inner.commit_cni(&r.a, &r.net_id, fds, &mut teardown));
            if answer.is_err() {
                if r.created_network
                    && let Ok(t) = inner.network_remove(network)
                {
                    teardown.absorb(t);
                }
                inner.release_stale_claims();
            }
            (answer, teardown)
        };
        teardown.run();
        answer
    }
}

/// What making an attachment's TAP needs, copied out under the lock.
struct CniPlan {
    spec: wiring::TapSpec,
    /// The default route via the gateway (none on an internal network).
    route: Option<(Ipv4Addr, String)>,
    /// The IPv6 one (a dual-stack network's).
    route6: Option<(std::net::Ipv6Addr, String)>,
}

/// A CNI ADD as planned under the lock.
enum CniAdd {
    /// The attachment is there already (a retried ADD).
    Exists(Attachment),
    /// A new attachment, reserved in `creating_cni`.
    New(CniReserved),
}

struct CniReserved {
    a: CniAttachment,
    /// The id of its network as planned (a network made again meanwhile is another).
    net_id: String,
    plan: CniPlan,
    /// The ADD made the network: a failed ADD removes it.
    created_network: bool,
}

/// Make the attachment's TAP in the runtime's namespace, configured and routed (slow: a thread
/// enters the namespace). On failure the TAP goes with its fds.
fn cni_make(a: &CniAttachment, plan: CniPlan) -> Result<Vec<std::os::fd::OwnedFd>> {
    let netns = std::path::Path::new(&a.netns);
    let fds = wiring::create_tap(netns, plan.spec).map_err(|e| match e {
        // Never an interface the runtime or anyone else made (see `open_tap_queues`).
        Error::AlreadyExists {
            kind: "interface", ..
        } => Error::conflict(crate::cni::ifname_taken(&a.ifname, &a.netns)),
        e => e,
    })?;
    if plan.route6.is_some() {
        wiring::set_default_routes(netns, plan.route, plan.route6)?;
    } else {
        // The runtime's IPv6 routes are not tapnet's to remove.
        wiring::set_default_route(netns, plan.route)?;
    }
    Ok(fds)
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
            address: a.ipv4.map(|ip| format!("{ip}/{prefix}")),
            gateway: net
                .gateway
                .filter(|_| !net.internal && a.ipv4.is_some())
                .map(|g| g.to_string()),
            netns: a.netns.clone(),
            address6: a
                .ipv6
                .zip(net.subnet6)
                .map(|(ip, s)| format!("{ip}/{}", s.prefix)),
            gateway6: net
                .gateway6
                .filter(|_| !net.internal && a.ipv6.is_some())
                .map(|g| g.to_string()),
        })
    }

    /// What making the attachment's TAP needs, planned by its network.
    fn cni_plan(&mut self, a: &CniAttachment) -> Result<(Network, CniPlan)> {
        let net = self.network(&a.network)?.clone();
        if net.gateway.is_none() && net.gateway6.is_none() {
            return Err(Error::invalid(format!(
                "network {} has no subnet",
                net.name
            )));
        }
        if !self.nets.contains_key(&net.name) {
            return Err(Error::not_found("network", &net.name));
        }
        let spec = bridge::tap_spec(&self.ctx(), &net, a.ifname.clone(), a.mac, a.ipv4, a.ipv6)?;
        let route = net
            .gateway
            .filter(|_| !net.internal && a.ipv4.is_some())
            .map(|g| (g, a.ifname.clone()));
        let route6 = net
            .gateway6
            .filter(|_| !net.internal && a.ipv6.is_some())
            .map(|g| (g, a.ifname.clone()));
        Ok((
            net,
            CniPlan {
                spec,
                route,
                route6,
            },
        ))
    }

    /// Wire the attachment's TAP by the network's driver.
    fn cni_attach_tap(
        &mut self,
        a: &CniAttachment,
        net: &Network,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<()> {
        let port = drivers::of(net.driver).attach_tap(
            &self.ctx(),
            net,
            Tap {
                label: format!("cni:{}/{}", short(&a.container_id), a.ifname),
                mac: a.mac,
                // An IPv6-only attachment sends no IPv4: port security admits none from it.
                ipv4: a.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                ipv6: a.ipv6,
                fds: TapFds::Queues(fds),
            },
        )?;
        self.cni_ports
            .insert((a.container_id.clone(), a.ifname.clone()), port);
        Ok(())
    }

    /// Make the TAP in the namespace and wire it, all under the lock (on restore).
    fn cni_wire(&mut self, a: &CniAttachment) -> Result<()> {
        let (net, plan) = self.cni_plan(a)?;
        let fds = cni_make(a, plan)?;
        self.cni_attach_tap(a, &net, fds)
    }

    /// Check a CNI ADD, make its network if the configuration gives a subnet, plan the
    /// attachment and reserve it; what a failure took down goes in the teardown.
    fn reserve_cni(
        &mut self,
        network: &str,
        subnets: Subnets,
        container_id: &str,
        ifname: &str,
        netns: &str,
        teardown: &mut Teardown,
    ) -> Result<CniAdd> {
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
                return self.attachment_view(&a).map(CniAdd::Exists);
            }
            return Err(Error::conflict(format!(
                "container {container_id} already has {ifname} on network {}",
                a.network
            )));
        }
        if self
            .creating_cni
            .iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname)
        {
            return Err(Error::conflict(format!(
                "container {container_id} is being given {ifname} already; try again"
            )));
        }
        let mut created_network = false;
        if self.state.network(network).is_none() {
            if subnets.subnet.is_none() && subnets.subnet6.is_none() {
                return Err(Error::not_found("network", network));
            }
            self.network_create(
                NetworkCreate {
                    name: network.to_string(),
                    no_ipv4: subnets.subnet.is_none(),
                    subnet: subnets.subnet,
                    gateway: subnets.gateway,
                    ipv6: subnets.subnet6.is_some(),
                    subnet6: subnets.subnet6,
                    gateway6: subnets.gateway6,
                    ..NetworkCreate::default()
                },
                teardown,
            )?;
            created_network = true;
        }
        let planned = self.plan_cni(network, container_id, ifname, netns);
        let (a, net, plan) = match planned {
            Ok(p) => p,
            Err(e) => {
                if created_network && let Ok(t) = self.network_remove(network) {
                    teardown.absorb(t);
                }
                return Err(e);
            }
        };
        self.creating_cni.push(a.clone());
        Ok(CniAdd::New(CniReserved {
            a,
            net_id: net.id,
            plan,
            created_network,
        }))
    }

    /// A new attachment on `network`: checked, its address chosen, its TAP planned.
    fn plan_cni(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        netns: &str,
    ) -> Result<(CniAttachment, Network, CniPlan)> {
        self.refuse_docker_owned(network)?;
        let net = self.network(network)?.clone();
        if !drivers::of(net.driver).takes_taps() {
            return Err(Error::invalid(format!(
                "network {network} (driver {}) takes no CNI attachments",
                net.driver.name()
            )));
        }
        if net.gateway.is_none() && net.gateway6.is_none() {
            return Err(Error::invalid(format!("network {network} has no subnet")));
        }
        let (ipv4, ipv6, mac) = if self.needs_claims(std::slice::from_ref(&net.name)) {
            // The addresses `claim_cni` claimed in the store (`preclaimed`), as a sandbox's
            // endpoint takes them.
            let stub = Sandbox {
                name: super::cluster::cni_record_name(container_id, ifname),
                id: String::new(),
                hostname: String::new(),
                endpoints: Vec::new(),
                ports: Vec::new(),
            };
            let ep = self.plan_claimed(&stub, &net, (None, None), Vec::new())?;
            let mac = ep
                .mac
                .ok_or_else(|| Error::invalid(format!("network {network} has no subnet")))?;
            (ep.ipv4, ep.ipv6, mac)
        } else {
            let planning = self.planning_state();
            let ipv4 = match (net.subnet, net.gateway) {
                (Some(subnet), Some(gateway)) => {
                    let used = endpoints::addresses_on(&planning, network);
                    Some(ipam::allocate(subnet, gateway, net.ip_range, &used, None)?)
                }
                _ => None,
            };
            let ipv6 = match (net.subnet6, net.gateway6) {
                (Some(subnet6), Some(gateway6)) => {
                    let used6 = endpoints::addresses6_on(&planning, network);
                    Some(ipam6::allocate(subnet6, gateway6, &used6, None)?)
                }
                _ => None,
            };
            let mac = endpoints::station_mac(&planning, network, ipv4, ipv6)?;
            (ipv4, ipv6, mac)
        };
        let a = CniAttachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_string(),
            network: network.to_string(),
            ipv4,
            ipv6,
            mac,
        };
        let (net, plan) = self.cni_plan(&a)?;
        Ok((a, net, plan))
    }

    /// Attach a reserved attachment's TAP and add it to the model, if its network is still the
    /// one planned on; on failure its port goes in the teardown.
    fn commit_cni(
        &mut self,
        a: &CniAttachment,
        net_id: &str,
        fds: Vec<std::os::fd::OwnedFd>,
        teardown: &mut Teardown,
    ) -> Result<Attachment> {
        let what = format!("CNI attachment {}/{}", a.container_id, a.ifname);
        let net = self.network_as_planned(&a.network, net_id, &what)?;
        self.cni_attach_tap(a, &net, fds)?;
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
        self.attachment_view(a)
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

    /// CNI GC: every attachment on `network` that the runtime does not list as valid goes,
    /// as a DEL of it would; the others stay. Returns the removed ones as `ID/IFNAME`.
    fn cni_gc(
        &mut self,
        network: &str,
        valid: &[(String, String)],
        teardown: &mut Teardown,
    ) -> Result<Vec<String>> {
        let stale: Vec<(String, String)> = self
            .state
            .cni
            .iter()
            .filter(|a| a.network == network)
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .filter(|key| !valid.contains(key))
            .collect();
        let mut removed = Vec::new();
        for (container_id, ifname) in stale {
            self.cni_del(&container_id, &ifname, teardown)?;
            removed.push(format!("{container_id}/{ifname}"));
        }
        Ok(removed)
    }

    /// CNI CHECK's part under the lock: the attachment's view and namespace, if it has its
    /// switch port (whether the namespace has its link is the caller's to look, unlocked).
    pub(super) fn cni_check(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<(Attachment, String)> {
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
        Ok((self.attachment_view(a)?, a.netns.clone()))
    }

    /// After a restart: make the TAPs again in namespaces that still exist. An interface of
    /// the attachment's name may still be there, the TAP of the daemon that died: those are
    /// tried again for a while (`restore::retry_while_interfaces_linger`).
    pub(super) fn restore_cni(&mut self) {
        let mut pending = Vec::new();
        for a in self.state.cni.clone() {
            if !std::path::Path::new(&a.netns).exists() {
                eprintln!(
                    "tapnet: CNI attachment {}/{}: namespace {} is gone",
                    a.container_id, a.ifname, a.netns
                );
                continue;
            }
            pending.push(a);
        }
        let waited = super::restore::retry_while_interfaces_linger(
            pending,
            |a| {
                self.cni_wire(a).map_err(|e| match e {
                    Error::Conflict(m) if m == crate::cni::ifname_taken(&a.ifname, &a.netns) => {
                        Error::exists("interface", a.ifname.clone())
                    }
                    e => e,
                })
            },
            |a, e| {
                eprintln!(
                    "tapnet: cannot restore CNI attachment {}/{}: {e}",
                    a.container_id, a.ifname
                )
            },
        );
        if let Some(ms) = waited {
            eprintln!(
                "tapnet: CNI attachments restored after {ms} ms waiting for the dead daemon's \
                 interfaces to go"
            );
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
