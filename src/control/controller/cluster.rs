//! The cluster store's side of the controller (`daemon --store`): publishing this host's overlay
//! networks and endpoints, claiming addresses cluster-wide, and applying what the store says of
//! the other hosts (networks made here, their endpoints in the VTEPs' tables and the gateways'
//! names). Events come from the store thread (`cluster::etcd`) through a channel; a thread of
//! the controller applies them under its lock. Requests that wait for the store (a network's
//! key, an address's claim) make their store calls without the lock.

use super::*;
use std::net::Ipv6Addr;

use crate::cluster::{Claim, Cluster, EndpointRecord, Event};

/// Addresses tried before an endpoint's planning gives up on claims other hosts win.
const CLAIM_TRIES: usize = 64;

/// Whom an endpoint's addresses are claimed for.
#[derive(Clone, Copy)]
enum Claimant<'a> {
    /// A sandbox being created (`create`) or connected to another network.
    Sandbox { name: &'a str, create: bool },
    /// A CNI attachment, by the name its store record carries (`cni_record_name`).
    Cni(&'a str),
}

impl Claimant<'_> {
    fn name(&self) -> &str {
        match self {
            Claimant::Sandbox { name, .. } | Claimant::Cni(name) => name,
        }
    }
}

/// The name a CNI attachment's store record carries: not a sandbox's (a `:` no sandbox name
/// has), so other hosts give it no DNS name.
pub(super) fn cni_record_name(container_id: &str, ifname: &str) -> String {
    format!("cni:{container_id}/{ifname}")
}

impl Controller {
    /// A clean stop: revoke the daemon's lease, so that its endpoints leave the other hosts at
    /// once (a killed daemon's go when the lease runs out). Their claims go with it.
    pub fn leave_cluster(&self) {
        let cluster = self.lock().cluster.clone();
        if let Some(cluster) = cluster {
            cluster.revoke();
        }
    }

    /// Start using the cluster store: publish what this host has, then apply the store's
    /// changes as they come, until the store thread ends.
    pub fn attach_cluster(
        self: &Arc<Self>,
        cluster: Cluster,
        events: crossbeam_channel::Receiver<Event>,
    ) -> Result<()> {
        {
            let mut inner = self.lock();
            let overlay: Vec<Network> = inner
                .state
                .networks
                .iter()
                .filter(|n| drivers::of(n.driver).in_cluster_store())
                .cloned()
                .collect();
            for net in &overlay {
                if let Err(e) = cluster.put_network(net) {
                    eprintln!("tapnet: network {}: {e}", net.name);
                }
            }
            // Records name the cluster's host: `own_record` needs the cluster in place.
            inner.cluster = Some(cluster.clone());
            let own: Vec<EndpointRecord> = inner
                .state
                .sandboxes
                .iter()
                .flat_map(|sb| sb.endpoints.iter().map(move |ep| (sb, ep)))
                .filter_map(|(sb, ep)| inner.own_record(&sb.name, ep))
                .chain(inner.state.cni.iter().filter_map(|a| inner.cni_record(a)))
                .collect();
            for rec in own {
                inner
                    .claimed
                    .get_mut()
                    .insert((rec.network.clone(), rec.ip));
                cluster.publish(rec);
            }
        }
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cluster-events".into())
            .spawn(move || {
                for ev in events {
                    let Some(this) = me.upgrade() else { return };
                    let teardown = {
                        let mut inner = this.lock();
                        let mut teardown = Teardown::new(inner.dp.clone());
                        inner.apply_cluster(ev, &mut teardown);
                        teardown
                    };
                    teardown.run();
                }
            })
            .map_err(|e| Error::invalid(format!("cluster store: start its event thread: {e}")))?;
        Ok(())
    }
}

impl Controller {
    /// `sandbox create` on an overlay network with a store: its addresses claimed first
    /// without the lock, then the create as usual, its plans taking them.
    pub(super) fn sandbox_create_claimed(&self, req: SandboxCreate) -> Result<Value> {
        let networks = if req.networks.is_empty() {
            vec!["bridge".to_string()]
        } else {
            req.networks.clone()
        };
        let wanted = networks
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                if i == 0 {
                    (n, req.ip.clone(), req.ip6.clone())
                } else {
                    (n, None, None)
                }
            })
            .collect();
        let who = Claimant::Sandbox {
            name: &req.name,
            create: true,
        };
        let won = self.claim_addresses(who, wanted)?;
        self.sandbox_create(req, Some(won))
    }

    /// `network connect` to an overlay network with a store: as `sandbox_create_claimed`.
    pub(super) fn network_connect_claimed(
        &self,
        network: &str,
        sandbox: &str,
        ips: Wanted<'_>,
        aliases: Vec<String>,
    ) -> Result<Value> {
        let wanted = vec![(
            network.to_string(),
            ips.0.map(str::to_string),
            ips.1.map(str::to_string),
        )];
        let who = Claimant::Sandbox {
            name: sandbox,
            create: false,
        };
        let won = self.claim_addresses(who, wanted)?;
        self.network_connect(network, sandbox, ips, aliases, Some(won))
    }

    /// CNI ADD on an overlay network with a store: the attachment's addresses claimed first
    /// without the lock, as a sandbox's (none claimed on other networks, or for an attachment
    /// that exists already: its ADD answers as before).
    pub(super) fn claim_cni(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<HashMap<String, IpAddr>> {
        {
            let inner = self.lock();
            let exists = inner
                .planning_state()
                .cni
                .iter()
                .any(|a| a.container_id == container_id && a.ifname == ifname);
            if exists || !inner.needs_claims(&[network.to_string()]) {
                return Ok(HashMap::new());
            }
        }
        let name = cni_record_name(container_id, ifname);
        self.claim_addresses(
            Claimant::Cni(&name),
            vec![(network.to_string(), None, None)],
        )
    }

    /// Claim in the store, without the lock, the address each endpoint of `sandbox` on an
    /// overlay network will have: (network, the IPv4 and IPv6 addresses asked for). Planned
    /// and reserved (in `pending_claims`, the IPv6 one in `claims6`) under the lock, claimed
    /// without it. A request that its plan will refuse claims nothing: the plan under the lock
    /// says why, as before.
    fn claim_addresses(
        &self,
        who: Claimant<'_>,
        wanted: Vec<(String, Option<String>, Option<String>)>,
    ) -> Result<HashMap<String, IpAddr>> {
        let mut won = HashMap::new();
        for (network, ip, ip6) in wanted {
            let ips = (ip.as_deref(), ip6.as_deref());
            match self.claim_one(who, &network, ips) {
                Ok(Some(addr)) => {
                    won.insert(network, addr);
                }
                Ok(None) => {}
                Err(e) => {
                    let mut inner = self.lock();
                    inner.take_claims(won);
                    inner.preclaimed.clear();
                    inner.release_stale_claims();
                    return Err(e);
                }
            }
        }
        Ok(won)
    }

    /// One endpoint's addresses claimed (None: nothing to claim, or a plan that will fail):
    /// the address the claim is known by (its IPv4 address, or on an IPv6-only network its
    /// IPv6 one), and on a dual-stack network its IPv6 one with it (kept in `claims6`).
    fn claim_one(
        &self,
        who: Claimant<'_>,
        network: &str,
        ips: Wanted<'_>,
    ) -> Result<Option<IpAddr>> {
        let mut lost: Vec<Ipv4Addr> = Vec::new();
        let mut lost6: Vec<Ipv6Addr> = Vec::new();
        let sandbox = who.name();
        for _ in 0..CLAIM_TRIES {
            let (rec, cluster) = {
                let mut inner = self.lock();
                if let Claimant::Sandbox { name, create } = who {
                    let exists = inner.planning_state().sandbox(name).is_some();
                    if exists == create || inner.removing.contains(name) {
                        return Ok(None);
                    }
                }
                let Some(cluster) = inner.cluster.clone() else {
                    return Ok(None);
                };
                let Some(net) = inner.state.network(network).cloned() else {
                    return Ok(None);
                };
                if !drivers::of(net.driver).in_cluster_store() {
                    return Ok(None);
                }
                inner.prune_claims6();
                let stub = Sandbox {
                    name: sandbox.to_string(),
                    id: String::new(),
                    hostname: String::new(),
                    endpoints: Vec::new(),
                    ports: Vec::new(),
                };
                let Ok(ep) = inner.plan_unclaimed(&stub, &net, ips, Vec::new(), (&lost, &lost6))
                else {
                    return Ok(None);
                };
                let Some(rec) = inner.own_record(sandbox, &ep) else {
                    return Ok(None);
                };
                let key = (network.to_string(), rec.ip);
                inner.pending_claims.push(key.clone());
                if let Some(v6) = rec.ipv6 {
                    inner.claims6.insert(key, v6);
                }
                (rec, cluster)
            };
            let (addr, addr6) = (rec.ip, rec.ipv6);
            let claimed = cluster.claim(rec);
            if !matches!(claimed, Ok(Claim::Won)) {
                let key = (network.to_string(), addr);
                let mut inner = self.lock();
                inner.pending_claims.retain(|c| *c != key);
                inner.claims6.remove(&key);
            }
            let (key_taken, ipv6) = match claimed? {
                Claim::Won => return Ok(Some(addr)),
                Claim::Taken { ip, ipv6 } => (ip, ipv6),
            };
            let asked = |taken: bool, asked: Option<&str>, addr: String| {
                if taken && asked.is_some() {
                    Err(Error::conflict(format!(
                        "address {addr} on network {network} is taken by another host"
                    )))
                } else {
                    Ok(())
                }
            };
            let key_asked = match addr {
                IpAddr::V4(_) => ips.0,
                IpAddr::V6(_) => ips.1,
            };
            asked(key_taken, key_asked, addr.to_string())?;
            if let Some(v6) = addr6 {
                asked(ipv6, ips.1, v6.to_string())?;
                if ipv6 {
                    lost6.push(v6);
                }
            }
            // A key gone again before it was read still moves the plan on.
            if key_taken || !ipv6 {
                match addr {
                    IpAddr::V4(ip) => lost.push(ip),
                    IpAddr::V6(ip) => lost6.push(ip),
                }
            }
        }
        Err(Error::conflict(format!(
            "network {network}: no address could be claimed in the cluster store"
        )))
    }
}

impl Inner {
    /// Does a sandbox on `networks` (none: `bridge`) need addresses claimed in the store?
    pub(super) fn needs_claims(&self, networks: &[String]) -> bool {
        self.cluster.is_some()
            && networks.iter().any(|n| {
                self.state
                    .network(n)
                    .is_some_and(|n| drivers::of(n.driver).in_cluster_store())
            })
    }

    /// Claims won for the request about to be planned: out of `pending_claims`, into
    /// `claimed` (released again by the next save if the request fails) and `preclaimed`.
    pub(super) fn take_claims(&mut self, won: HashMap<String, IpAddr>) {
        // (Their IPv6 addresses stay in `claims6` by the same key, for `plan_claimed`.)
        for (network, addr) in &won {
            let key = (network.clone(), *addr);
            self.pending_claims.retain(|c| *c != key);
            self.claimed.get_mut().insert(key);
        }
        self.preclaimed = won;
    }

    /// The store's record of one of this host's endpoints (overlay networks only).
    pub(super) fn own_record(&self, sandbox: &str, ep: &Endpoint) -> Option<EndpointRecord> {
        let cluster = self.cluster.as_ref()?;
        let net = self.state.network(&ep.network)?;
        if !drivers::of(net.driver).in_cluster_store() {
            return None;
        }
        // Known by its IPv4 address, or on an IPv6-only network by its IPv6 one.
        let (ip, ipv6) = match (ep.ipv4, ep.ipv6) {
            (Some(v4), v6) => (IpAddr::V4(v4), v6),
            (None, Some(v6)) => (IpAddr::V6(v6), None),
            (None, None) => return None,
        };
        Some(EndpointRecord {
            network: net.name.clone(),
            ip,
            ipv6,
            mac: ep.mac?,
            sandbox: sandbox.to_string(),
            host: cluster.host.clone(),
            vtep: self.vtep_of(net)?,
        })
    }

    /// The store's record of one of this host's CNI attachments (overlay networks only).
    fn cni_record(&self, a: &crate::control::model::CniAttachment) -> Option<EndpointRecord> {
        let ep = Endpoint {
            id: String::new(),
            network: a.network.clone(),
            interface: Some(a.ifname.clone()),
            mac: Some(a.mac),
            ipv4: a.ipv4,
            ipv6: a.ipv6,
            aliases: Vec::new(),
            impairment: None,
            blocked: Vec::new(),
        };
        self.own_record(&cni_record_name(&a.container_id, &a.ifname), &ep)
    }

    fn vtep_of(&self, net: &Network) -> Option<std::net::SocketAddr> {
        drivers::overlay::options_of(net)
            .ok()?
            .vtep
            .or(self.overlay.default)
    }

    /// Forget IPv6 claims whose IPv4 claim is neither pending nor held any more.
    fn prune_claims6(&mut self) {
        let claimed = self.claimed.get_mut();
        let pending = &self.pending_claims;
        self.claims6
            .retain(|k, _| pending.contains(k) || claimed.contains(k));
    }

    /// Addresses other hosts' endpoints are known by on `network`.
    pub(super) fn remote_addresses(&self, network: &str) -> Vec<IpAddr> {
        self.remote_eps
            .keys()
            .filter(|(n, _)| n == network)
            .map(|(_, ip)| *ip)
            .collect()
    }

    /// IPv6 addresses being claimed on an IPv6-only `network` (the claim's own address).
    fn pending_v6<'a>(&'a self, network: &'a str) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.pending_claims
            .iter()
            .filter(move |(n, _)| n == network)
            .filter_map(|(_, ip)| match ip {
                IpAddr::V6(ip) => Some(*ip),
                IpAddr::V4(_) => None,
            })
    }

    /// Plan an endpoint on an overlay network with the store: with the address its request
    /// claimed without the lock (`claim_addresses`), so two hosts never hand out the same one.
    pub(super) fn plan_claimed(
        &self,
        sb: &Sandbox,
        net: &Network,
        ips: Wanted<'_>,
        aliases: Vec<String>,
    ) -> Result<Endpoint> {
        let Some(addr) = self.preclaimed.get(&net.name) else {
            // Nothing claimed: the plan fails (as `claim_one` saw), or the model changed.
            self.plan_unclaimed(sb, net, ips, aliases, (&[], &[]))?;
            return Err(Error::conflict(format!(
                "network {}: the address was not claimed in the cluster store; try again",
                net.name
            )));
        };
        let wanted = addr.to_string();
        if addr.is_ipv6() {
            // An IPv6-only network: the claim is the endpoint's only address.
            return self.plan_unclaimed(sb, net, (None, Some(&wanted)), aliases, (&[], &[]));
        }
        // The IPv6 address claimed with it, if any (else the request's, as planned).
        let wanted6 = self
            .claims6
            .get(&(net.name.clone(), *addr))
            .map(ToString::to_string);
        let ip6 = wanted6.as_deref().or(ips.1);
        self.plan_unclaimed(sb, net, (Some(&wanted), ip6), aliases, (&[], &[]))
    }

    /// Plan an endpoint on an overlay network without claiming: addresses (of both families)
    /// other hosts hold, `lost` (won by others meanwhile) and those being claimed here are
    /// taken.
    fn plan_unclaimed(
        &self,
        sb: &Sandbox,
        net: &Network,
        ips: Wanted<'_>,
        aliases: Vec<String>,
        (lost, lost6): (&[Ipv4Addr], &[Ipv6Addr]),
    ) -> Result<Endpoint> {
        let mut state = self.planning_state().into_owned();
        let taken6: Vec<Ipv6Addr> = self
            .remote_eps
            .values()
            .filter(|r| r.network == net.name)
            .filter_map(|r| r.ipv6_addr())
            .chain(lost6.iter().copied())
            .chain(
                // Those being claimed: a claim won but not planned yet is still pending.
                self.claims6
                    .iter()
                    .filter(|(k, _)| k.0 == net.name && self.pending_claims.contains(k))
                    .map(|(_, ip)| *ip),
            )
            .chain(self.pending_v6(&net.name))
            .collect();
        let taken = self
            .remote_eps
            .values()
            .filter(|r| r.network == net.name)
            .filter_map(|r| r.ipv4())
            .chain(lost.iter().copied())
            .chain(
                self.pending_claims
                    .iter()
                    .filter(|(n, _)| *n == net.name)
                    .filter_map(|(_, ip)| match ip {
                        IpAddr::V4(ip) => Some(*ip),
                        IpAddr::V6(_) => None,
                    }),
            );
        // They stand in as endpoints of a placeholder sandbox.
        state.sandboxes.push(Arc::new(Sandbox {
            name: String::new(),
            id: String::new(),
            hostname: String::new(),
            endpoints: taken
                .map(|ip| (Some(ip), None))
                .chain(taken6.into_iter().map(|ip| (None, Some(ip))))
                .map(|(ipv4, ipv6)| Endpoint {
                    id: String::new(),
                    network: net.name.clone(),
                    interface: None,
                    mac: None,
                    ipv4,
                    ipv6,
                    aliases: Vec::new(),
                    impairment: None,
                    blocked: Vec::new(),
                })
                .collect(),
            ports: Vec::new(),
        }));
        endpoints::plan_endpoint(&state, sb, net, ips.0, ips.1, aliases)
    }

    /// Take a network's key out of the store, unless other hosts still have endpoints on it.
    pub(super) fn unstore_network(&self, cluster: &Cluster, name: &str) {
        if self.remote_addresses(name).is_empty() {
            cluster.delete_network(name);
        }
    }

    /// Give back claims of endpoints neither the model nor a reservation has (removed, or a
    /// create that failed).
    pub(super) fn release_stale_claims(&self) {
        let Some(cluster) = &self.cluster else { return };
        // Reserved sandboxes (a create or connect under way) keep theirs.
        let live: HashSet<(String, IpAddr)> = self
            .state
            .sandboxes
            .iter()
            .map(|s| &**s)
            .chain(&self.creating_sandboxes)
            .flat_map(|sb| sb.endpoints.iter())
            .map(|ep| (&ep.network, ep.ipv4, ep.ipv6))
            // CNI attachments too, committed or being made.
            .chain(
                self.state
                    .cni
                    .iter()
                    .chain(&self.creating_cni)
                    .map(|a| (&a.network, a.ipv4, a.ipv6)),
            )
            .filter_map(|(network, ipv4, ipv6)| {
                let key = ipv4.map(IpAddr::V4).or(ipv6.map(IpAddr::V6))?;
                Some((network.clone(), key))
            })
            .collect();
        self.claimed.borrow_mut().retain(|(network, ip)| {
            let keep = live.contains(&(network.clone(), *ip));
            if !keep {
                cluster.release(network, *ip);
            }
            keep
        });
    }

    /// Tell the network's VTEP what the store knows of the other hosts.
    pub(super) fn sync_cluster(&self, network: &str) {
        if self.cluster.is_none() {
            return;
        }
        let mut view = crate::datapath::vtep::ClusterView::default();
        for rec in self.remote_eps.values().filter(|r| r.network == network) {
            if !view.peers.contains(&rec.vtep) {
                view.peers.push(rec.vtep);
            }
            view.stations.insert(rec.mac, rec.vtep);
            if let Some(ip) = rec.ipv4() {
                view.addresses.insert(ip, rec.mac);
            }
            if let Some(ip) = rec.ipv6_addr() {
                view.addresses6.insert(ip, rec.mac);
            }
        }
        self.overlay.set_cluster(network, view);
    }

    fn is_own(&self, rec: &EndpointRecord) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.host == rec.host)
    }

    /// Apply a change of the store; what it takes down goes in the teardown.
    pub(super) fn apply_cluster(&mut self, ev: Event, teardown: &mut Teardown) {
        match ev {
            Event::Snapshot {
                networks,
                endpoints,
            } => {
                for net in networks {
                    self.adopt_network(net, teardown);
                }
                let before: HashSet<String> = self
                    .remote_eps
                    .values()
                    .map(|r| r.network.clone())
                    .collect();
                self.remote_eps = endpoints
                    .into_iter()
                    .filter(|r| !self.is_own(r))
                    .map(|r| ((r.network.clone(), r.ip), r))
                    .collect();
                let mut touched: HashSet<String> = self
                    .remote_eps
                    .values()
                    .map(|r| r.network.clone())
                    .collect();
                touched.extend(before);
                for n in touched {
                    self.sync_cluster(&n);
                }
                self.sync_names();
            }
            Event::Network(net) => self.adopt_network(net, teardown),
            Event::NetworkGone(name) => {
                self.deferred_networks.retain(|n| n.name != name);
                // Removed on another host: this host's network stays while it is used here.
                if self.state.network(&name).is_some() {
                    eprintln!(
                        "tapnet: network {name} left the cluster store; kept here (remove it with network rm)"
                    );
                }
            }
            Event::Endpoint(rec) => {
                if self.is_own(&rec) {
                    return;
                }
                let network = rec.network.clone();
                self.remote_eps.insert((network.clone(), rec.ip), rec);
                self.sync_cluster(&network);
                self.sync_names();
            }
            Event::EndpointGone { network, ip } => {
                if self.remote_eps.remove(&(network.clone(), ip)).is_some() {
                    self.sync_cluster(&network);
                    self.sync_names();
                }
            }
        }
    }

    /// Adopt the store's networks that waited for a create here to end (`adopt_network`).
    pub(super) fn adopt_deferred(&mut self, teardown: &mut Teardown) {
        for net in std::mem::take(&mut self.deferred_networks) {
            self.adopt_network(net, teardown);
        }
    }

    /// Make here an overlay network another host put in the store.
    fn adopt_network(&mut self, mut net: Network, teardown: &mut Teardown) {
        // A network being created here (`network_create_outside`) is this host's own.
        if !drivers::of(net.driver).in_cluster_store()
            || self.planning_state().network(&net.name).is_some()
        {
            return;
        }
        if let Some(other) = self
            .state
            .networks
            .iter()
            .chain(&self.creating_networks)
            .find(|n| n.vni.is_some() && n.vni == net.vni)
        {
            if self.creating_networks.iter().any(|n| n.name == other.name) {
                // A create here holds that VNI until the store's transaction says who won
                // (the store's one winner may be this other network): try again when the
                // create is over (`adopt_deferred`).
                self.deferred_networks.retain(|n| n.name != net.name);
                self.deferred_networks.push(net);
                return;
            }
            eprintln!(
                "tapnet: network {} of the cluster store has VNI {:?}, taken here by network {}; not made",
                net.name, net.vni, other.name
            );
            return;
        }
        let Some(vtep) = self.overlay.default else {
            eprintln!(
                "tapnet: network {} of the cluster store needs a VTEP: start the daemon with --vtep",
                net.name
            );
            return;
        };
        net.options.insert("vtep".to_string(), vtep.to_string());
        net.builtin = false;
        // Checked as a restarted daemon checks its state file, which will hold it.
        let mut next = self.state.clone();
        next.networks.push(net.clone());
        match validate::state(&next) {
            Ok(mut typed) => net.typed = typed.pop(),
            Err(e) => {
                eprintln!(
                    "tapnet: network {} of the cluster store: {e}; not made",
                    net.name
                );
                return;
            }
        }
        if let Err(e) = self.add_switch(&net) {
            eprintln!("tapnet: network {} of the cluster store: {e}", net.name);
            return;
        }
        self.state.networks.push(net.clone());
        if let Err(e) = self.save() {
            eprintln!("tapnet: network {} of the cluster store: {e}", net.name);
            self.state.networks.pop();
            self.remove_switch(&net, teardown);
            return;
        }
        self.sync_cluster(&net.name);
    }
}
