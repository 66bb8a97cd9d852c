//! The controller as a Docker network plugin's host: each call of dockerd becomes a change of
//! the model, checked first, saved, and undone if a later step fails. A Docker network is a
//! tapnet bridge network (`docker-` and the NetworkID's first 12 digits) with Docker's pool and
//! gateway; a Docker endpoint is a TAP made in the daemon's namespace at Join, which dockerd
//! moves into the container. Docker configures the addresses and routes itself; with
//! `--ipv6` the network is dual-stack with Docker's IPv6 pool and gateway, and the endpoint
//! keeps the IPv6 address dockerd gives it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Controller, Inner, Teardown};
use crate::api::types::NetworkCreate;
use crate::control::model::{DockerEndpoint, DockerPlugin, Network, new_id};
use crate::control::ports::{self, HostSocket, Protocol, PublishedPort};
use crate::control::wiring;
use crate::drivers;
use crate::drivers::bridge::{self, Tap, TapFds};
use crate::error::{Error, Result};
use crate::gateway::publish::{GatewayCommand, PublishTarget};
use crate::netns::namespace::in_netns;
use crate::netns::tap::{self, Offload};
use crate::plugin::docker::{self as server, Host, Server};
use crate::plugin::protocol as p;
use crate::wire::MacAddr;

/// `a.b.c.d/len` (or a bare address) as Docker writes them.
fn parse_cidr_addr(what: &str, s: &str) -> Result<(Ipv4Addr, Option<u8>)> {
    let bad = || {
        Error::invalid(format!(
            "malformed {what} {s:?}: expected IPv4 ADDRESS/PREFIX"
        ))
    };
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip = ip.parse().map_err(|_| bad())?;
    if prefix.is_some_and(|p| p > 32) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// CreateEndpoint's answer: only what dockerd left to tapnet (it refuses a changed value):
/// the MAC, and the IPv6 address tapnet picked when dockerd sent none.
fn endpoint_answer(
    ep: &DockerEndpoint,
    net: &Network,
    mac_left: bool,
    ipv6_left: bool,
) -> p::CreateEndpointResponse {
    let address_ipv6 = ep
        .ipv6
        .zip(net.subnet6)
        .filter(|_| ipv6_left)
        .map(|(ip, subnet)| format!("{ip}/{}", subnet.prefix))
        .unwrap_or_default();
    let mac_address = if mac_left {
        ep.mac.to_string()
    } else {
        String::new()
    };
    p::CreateEndpointResponse {
        interface: (!mac_address.is_empty() || !address_ipv6.is_empty()).then(|| {
            p::EndpointInterface {
                mac_address,
                address_ipv6,
                ..p::EndpointInterface::default()
            }
        }),
    }
}

/// `a:b::c/len` (or a bare address) as Docker writes them.
fn parse_cidr_addr6(what: &str, s: &str) -> Result<(Ipv6Addr, Option<u8>)> {
    let bad = || {
        Error::invalid(format!(
            "malformed {what} {s:?}: expected IPv6 ADDRESS/PREFIX"
        ))
    };
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip = ip.parse().map_err(|_| bad())?;
    if prefix.is_some_and(|p| p > 128) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// Docker's ids are hex; they become parts of network names.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(format!("malformed {what} {id:?}")));
    }
    Ok(())
}

impl Controller {
    /// Start the plugin servers the state lists (after a restart); the daemon calls this once
    /// with the controller's `Arc`.
    pub fn serve_plugins(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
        let names: Vec<String> = self
            .lock()
            .state
            .docker_plugins
            .iter()
            .filter(|p| p.serving)
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            match Server::start(&name, self.clone()) {
                Ok(s) => {
                    self.servers().insert(name, s);
                }
                Err(e) => eprintln!("tapnet: cannot serve Docker plugin {name}: {e}"),
            }
        }
    }

    /// Stop every plugin server and remove its socket (the daemon is stopping).
    pub fn stop_plugins(&self) {
        self.servers().clear();
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Server>> {
        crate::guard::lock_or_stop(&self.docker_servers, "the Docker plugin servers")
    }

    /// `tapnet plugin docker [--name NAME] [--stop]`.
    pub(super) fn plugin_docker(&self, name: &str, stop: bool) -> Result<Value> {
        server::validate_name(name)?;
        let socket = server::socket_path(name).display().to_string();
        let mut servers = self.servers();
        if stop {
            if servers.remove(name).is_none() {
                return Err(Error::not_found("Docker plugin", name));
            }
            let mut inner = self.lock();
            let before = inner.state.docker_plugins.clone();
            // What dockerd made stays, for when the plugin serves again.
            inner
                .state
                .docker_plugins
                .retain(|p| p.name != name || !(p.networks.is_empty() && p.endpoints.is_empty()));
            for p in inner
                .state
                .docker_plugins
                .iter_mut()
                .filter(|p| p.name == name)
            {
                p.serving = false;
            }
            if let Err(e) = inner.save() {
                inner.state.docker_plugins = before;
                return Err(e);
            }
            return Ok(json!({"name": name, "socket": socket, "serving": false}));
        }
        if servers.contains_key(name) {
            return Ok(json!({"name": name, "socket": socket, "serving": true}));
        }
        let me = self
            .me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| Error::conflict("the daemon is not ready to serve plugins"))?;
        let started = Server::start(name, me)?;
        let mut inner = self.lock();
        let before = inner.state.docker_plugins.clone();
        match inner
            .state
            .docker_plugins
            .iter_mut()
            .find(|p| p.name == name)
        {
            Some(p) => p.serving = true,
            None => inner.state.docker_plugins.push(DockerPlugin {
                name: name.to_string(),
                serving: true,
                ..DockerPlugin::default()
            }),
        }
        if let Err(e) = inner.save() {
            inner.state.docker_plugins = before;
            return Err(e);
        }
        servers.insert(name.to_string(), started);
        Ok(json!({"name": name, "socket": socket, "serving": true}))
    }
}

impl Inner {
    /// Networks dockerd made are changed through dockerd only.
    pub(super) fn refuse_docker_owned(&self, network: &str) -> Result<()> {
        match self.state.docker_owner(network) {
            Some(p) => Err(Error::conflict(format!(
                "network {network} belongs to Docker plugin {}: use docker network commands",
                p.name
            ))),
            None => Ok(()),
        }
    }

    fn plugin(&self, name: &str) -> Result<&DockerPlugin> {
        self.state
            .docker_plugins
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::not_found("Docker plugin", name))
    }

    fn plugin_mut(&mut self, name: &str) -> Result<&mut DockerPlugin> {
        self.state
            .docker_plugins
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::not_found("Docker plugin", name))
    }

    /// The tapnet network of Docker network `id`.
    fn docker_network(&self, plugin: &str, id: &str) -> Result<String> {
        self.plugin(plugin)?
            .networks
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found("Docker network", id))
    }

    fn docker_create_network(
        &mut self,
        plugin: &str,
        req: p::CreateNetworkRequest,
        teardown: &mut Teardown,
    ) -> Result<()> {
        let id = req.network_id.clone();
        check_id("NetworkID", &id)?;
        if self.plugin(plugin)?.networks.contains_key(&id) {
            return Ok(());
        }
        let pools6 = req.ipv6_data.clone().unwrap_or_default();
        let (subnet6, gateway6) = match pools6.as_slice() {
            [] => (None, None),
            [pool] => {
                let gateway = if pool.gateway.is_empty() {
                    None
                } else {
                    Some(
                        parse_cidr_addr6("IPv6 gateway", &pool.gateway)?
                            .0
                            .to_string(),
                    )
                };
                (Some(pool.pool.clone()), gateway)
            }
            _ => {
                return Err(Error::invalid(format!(
                    "network {id}: tapnet takes at most one IPv6 pool, dockerd sent {}",
                    pools6.len()
                )));
            }
        };
        // dockerd sends the pool with `--ipv6`; the flag alone (no pool) asks for tapnet's.
        let ipv6 = subnet6.is_some() || p::enable_ipv6(&req.options);
        let pools = req.ipv4_data.clone().unwrap_or_default();
        // No IPv4 pool with an IPv6 one: an IPv6-only network (Docker 28's `--ipv4=false`).
        let (subnet, gateway) = match pools.as_slice() {
            [] if subnet6.is_some() => (None, None),
            [pool] => {
                let gateway = if pool.gateway.is_empty() {
                    None
                } else {
                    Some(parse_cidr_addr("gateway", &pool.gateway)?.0.to_string())
                };
                (Some(pool.pool.clone()), gateway)
            }
            _ => {
                return Err(Error::invalid(format!(
                    "network {id}: tapnet needs one IPv4 pool (or none and one IPv6 pool), dockerd sent {}",
                    pools.len()
                )));
            }
        };
        let name = format!("docker-{}", &id[..12]);
        let created = self.network_create(
            NetworkCreate {
                name: name.clone(),
                no_ipv4: subnet.is_none(),
                subnet,
                gateway,
                options: p::generic_options(&req.options),
                ipv6,
                subnet6,
                gateway6,
                ..NetworkCreate::default()
            },
            teardown,
        )?;
        self.plugin_mut(plugin)?
            .networks
            .insert(id.clone(), created);
        if let Err(e) = self.save() {
            if let Ok(p) = self.plugin_mut(plugin) {
                p.networks.remove(&id);
            }
            if let Ok(t) = self.network_remove(&name) {
                teardown.absorb(t);
            }
            return Err(e);
        }
        Ok(())
    }

    fn docker_delete_network(&mut self, plugin: &str, id: &str) -> Result<Option<Teardown>> {
        let Some(name) = self.plugin(plugin)?.networks.get(id).cloned() else {
            // Already gone: dockerd retries deletions.
            return Ok(None);
        };
        let left = self
            .plugin(plugin)?
            .endpoints
            .values()
            .filter(|e| e.network == name)
            .count();
        if left > 0 {
            return Err(Error::conflict(format!(
                "Docker network {id} ({name}) still has {left} endpoints"
            )));
        }
        self.plugin_mut(plugin)?.networks.remove(id);
        match self.network_remove(&name) {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                self.plugin_mut(plugin)?
                    .networks
                    .insert(id.to_string(), name);
                Err(e)
            }
        }
    }

    fn docker_create_endpoint(
        &mut self,
        plugin: &str,
        req: p::CreateEndpointRequest,
    ) -> Result<p::CreateEndpointResponse> {
        check_id("EndpointID", &req.endpoint_id)?;
        let network = self.docker_network(plugin, &req.network_id)?;
        let iface = req.interface.clone().unwrap_or_default();
        let net = self.network(&network)?.clone();
        let ipv4 = match (iface.address.is_empty(), net.subnet) {
            (false, _) => Some(parse_cidr_addr("address", &iface.address)?.0),
            (true, None) => None,
            (true, Some(_)) => {
                return Err(Error::invalid(format!(
                    "endpoint {}: dockerd sent no IPv4 address",
                    req.endpoint_id
                )));
            }
        };
        let given6 = if iface.address_ipv6.is_empty() {
            None
        } else {
            Some(parse_cidr_addr6("IPv6 address", &iface.address_ipv6)?.0)
        };
        let given_mac = if iface.mac_address.is_empty() {
            None
        } else {
            Some(iface.mac_address.parse::<MacAddr>().map_err(|e| {
                Error::invalid(format!("malformed MAC {:?}: {e}", iface.mac_address))
            })?)
        };
        if let Some(ep) = self.plugin(plugin)?.endpoints.get(&req.endpoint_id) {
            if ep.ipv4 == ipv4
                && given6.is_none_or(|ip| ep.ipv6 == Some(ip))
                && ep.network == network
            {
                return Ok(endpoint_answer(
                    ep,
                    &net,
                    given_mac.is_none(),
                    given6.is_none(),
                ));
            }
            return Err(Error::exists("endpoint", req.endpoint_id.clone()));
        }
        if let Some(ip) = ipv4 {
            let subnet = net
                .subnet
                .ok_or_else(|| Error::invalid(format!("network {network} has no IPv4 subnet")))?;
            if !subnet.contains(ip) || Some(ip) == net.gateway {
                return Err(Error::invalid(format!(
                    "address {ip} is not a host address of {subnet} other than the gateway"
                )));
            }
        }
        if let Some(ip6) = given6 {
            let subnet6 = net.subnet6.ok_or_else(|| {
                Error::invalid(format!(
                    "endpoint {}: network {network} has no IPv6 subnet",
                    req.endpoint_id
                ))
            })?;
            if !subnet6.contains(ip6) || ip6 == subnet6.network() || Some(ip6) == net.gateway6 {
                return Err(Error::invalid(format!(
                    "address {ip6} is not a host address of {subnet6} other than the gateway"
                )));
            }
        }
        let docker_endpoints = || {
            self.state
                .docker_plugins
                .iter()
                .flat_map(|p| p.endpoints.values())
                .filter(|e| e.network == network)
        };
        let taken = docker_endpoints()
            .find(|e| (ipv4.is_some() && e.ipv4 == ipv4) || (given6.is_some() && e.ipv6 == given6));
        if let Some(e) = taken {
            let ip = match (ipv4, given6) {
                (Some(v4), _) if e.ipv4 == Some(v4) => v4.to_string(),
                (_, v6) => v6.map(|a| a.to_string()).unwrap_or_default(),
            };
            return Err(Error::conflict(format!(
                "address {ip} is in use on network {network}"
            )));
        }
        // dockerd sent no IPv6 address for a network with an IPv6 prefix (one tapnet picked,
        // which dockerd's IPAM does not know): tapnet picks one and tells dockerd.
        let ipv6 = match (given6, net.subnet6, net.gateway6) {
            (Some(ip6), _, _) => Some(ip6),
            (None, Some(subnet6), Some(gateway6)) => {
                // (The host's interface, with host_access=on, holds one too.)
                let mut used = super::endpoints::addresses6_on(&self.state, &network);
                used.others
                    .extend(docker_endpoints().filter_map(|e| e.ipv6));
                Some(crate::control::ipam6::allocate(
                    subnet6, gateway6, &used, None,
                )?)
            }
            _ => None,
        };
        let mac = match given_mac {
            Some(mac) => mac,
            None => super::endpoints::station_mac(&self.state, &network, ipv4, ipv6)?,
        };
        let ep = DockerEndpoint {
            network,
            ipv4,
            ipv6,
            mac,
            tap: None,
            sandbox_key: None,
            ports: Vec::new(),
        };
        let answer = endpoint_answer(&ep, &net, given_mac.is_none(), given6.is_none());
        self.plugin_mut(plugin)?
            .endpoints
            .insert(req.endpoint_id.clone(), ep);
        if let Err(e) = self.save() {
            self.plugin_mut(plugin)?.endpoints.remove(&req.endpoint_id);
            return Err(e);
        }
        Ok(answer)
    }

    fn docker_endpoint(&self, plugin: &str, id: &str) -> Result<DockerEndpoint> {
        self.plugin(plugin)?
            .endpoints
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found("endpoint", id))
    }

    /// Join, under the lock: the endpoint checked and reserved (`docker_joining`), its TAP
    /// planned; `make_docker_tap` makes it without the lock.
    fn reserve_join(&mut self, plugin: &str, req: &p::JoinRequest) -> Result<JoinPlan> {
        let ep = self.docker_endpoint(plugin, &req.endpoint_id)?;
        if self.docker_ports.contains_key(&req.endpoint_id)
            || self.docker_joining.contains(&req.endpoint_id)
        {
            return Err(Error::conflict(format!(
                "endpoint {} has joined a container already",
                req.endpoint_id
            )));
        }
        let net = self.network(&ep.network)?.clone();
        if !self.nets.contains_key(&net.name) {
            return Err(Error::not_found("network", &net.name));
        }
        if net.gateway.is_none() && net.gateway6.is_none() {
            return Err(Error::invalid(format!(
                "network {} has no gateway",
                net.name
            )));
        }
        let tap = format!("tn{}", &new_id()?[..8]);
        let offload = bridge::offload_of(&self.ctx(), &net);
        self.docker_joining.insert(req.endpoint_id.clone());
        Ok(JoinPlan {
            tap,
            mac: ep.mac,
            mtu: net.mtu,
            offload,
            net_id: net.id,
            gateway: net.gateway.filter(|_| ep.ipv4.is_some()),
            // Only for an endpoint with an IPv6 address: else dockerd has no v6 to route.
            gateway6: net.gateway6.filter(|_| ep.ipv6.is_some()),
        })
    }

    /// Join, under the lock again: the TAP `make_docker_tap` made wired to the network and the
    /// endpoint marked joined, if the endpoint and its network are still there; on failure the
    /// teardown makes the TAP transient (so that it goes) and removes its port.
    fn commit_join(
        &mut self,
        plugin: &str,
        req: &p::JoinRequest,
        plan: &JoinPlan,
        (fd, keep): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
        teardown: &mut Teardown,
    ) -> Result<p::JoinResponse> {
        let tap = plan.tap.clone();
        let checked = self
            .docker_endpoint(plugin, &req.endpoint_id)
            .and_then(|ep| {
                let what = format!("Docker endpoint {}", req.endpoint_id);
                Ok((
                    self.network_as_planned(&ep.network, &plan.net_id, &what)?,
                    ep,
                ))
            });
        let (net, ep) = match checked {
            Ok(c) => c,
            Err(e) => {
                teardown.taps.push((keep, tap));
                return Err(e);
            }
        };
        let attached = drivers::of(net.driver).attach_tap(
            &self.ctx(),
            &net,
            Tap {
                label: format!("docker:{}/{tap}", &req.endpoint_id[..12]),
                mac: ep.mac,
                // An IPv6-only endpoint sends no IPv4: port security admits none from it.
                ipv4: ep.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                ipv6: ep.ipv6,
                fds: TapFds::One(fd),
            },
        );
        let port = match attached {
            Ok(p) => p,
            Err(e) => {
                teardown.taps.push((keep, tap));
                return Err(e);
            }
        };
        let before = self.state.docker_plugins.clone();
        if let Some(e) = self.plugin_mut(plugin)?.endpoints.get_mut(&req.endpoint_id) {
            e.tap = Some(tap.clone());
            e.sandbox_key = Some(req.sandbox_key.clone()).filter(|k| !k.is_empty());
        }
        if let Err(e) = self.save() {
            self.state.docker_plugins = before;
            teardown.taps.push((keep, tap));
            let unwired = self.detach_tap(&net.name, port);
            teardown.endpoints.push(unwired);
            return Err(e);
        }
        self.docker_ports.insert(req.endpoint_id.clone(), port);
        self.docker_fds.insert(req.endpoint_id.clone(), keep);
        Ok(p::JoinResponse {
            interface_name: Some(p::InterfaceName {
                src_name: tap,
                dst_prefix: "eth".into(),
            }),
            // With a gateway dockerd adds no docker_gwbridge of its own.
            gateway: plan.gateway.map(|g| g.to_string()).unwrap_or_default(),
            gateway_ipv6: plan.gateway6.map(|g| g.to_string()).unwrap_or_default(),
            ..p::JoinResponse::default()
        })
    }

    /// `docker run -p`: bind the host sockets first (a taken port fails the call and changes
    /// nothing), persist, then hand them to the network's gateway, as for a sandbox's `-p`.
    fn docker_program_external(
        &mut self,
        plugin: &str,
        req: p::ProgramExternalRequest,
    ) -> Result<()> {
        let id = req.endpoint_id.clone();
        let ep = self.docker_endpoint(plugin, &id)?;
        let bindings = p::port_bindings(&req.options).map_err(Error::Invalid)?;
        if bindings.is_empty() || self.docker_publications.contains_key(&id) {
            return Ok(());
        }
        let net = self.network(&ep.network)?;
        if net.internal {
            return Err(Error::invalid(format!(
                "network {} is internal: it publishes no ports",
                net.name
            )));
        }
        let mut planned: Vec<PublishedPort> = Vec::new();
        for b in &bindings {
            let protocol = match b.proto {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                n => {
                    return Err(Error::invalid(format!(
                        "cannot publish IP protocol {n}: only TCP and UDP"
                    )));
                }
            };
            let all_addresses = |ip: Option<&str>| matches!(ip, None | Some("" | "0.0.0.0"));
            let host_ip = match b.host_ip.as_deref().unwrap_or("") {
                "" | "0.0.0.0" => None,
                // A port published on all addresses listens on both families already; dockerd
                // may add a binding for "::" beside it.
                "::" if bindings.iter().any(|o| {
                    o.port == b.port && o.proto == b.proto && all_addresses(o.host_ip.as_deref())
                }) =>
                {
                    continue;
                }
                s => Some(
                    s.parse::<std::net::IpAddr>()
                        .map_err(|_| Error::invalid(format!("malformed host address {s:?}")))?,
                ),
            };
            if b.host_port == 0 || (b.host_port_end != 0 && b.host_port_end != b.host_port) {
                return Err(Error::invalid(format!(
                    "publish port {}: tapnet needs one explicit host port (-p HOSTPORT:{})",
                    b.port, b.port
                )));
            }
            let port = PublishedPort {
                host_ip,
                host_port: b.host_port,
                port: b.port,
                protocol,
                network: ep.network.clone(),
            };
            let clash = planned
                .iter()
                .chain(self.state.sandboxes.iter().flat_map(|s| s.ports.iter()))
                .chain(
                    self.state
                        .docker_plugins
                        .iter()
                        .flat_map(|p| p.endpoints.values())
                        .flat_map(|e| e.ports.iter()),
                )
                .find(|q| q.clashes_with(&port));
            if let Some(clash) = clash {
                return Err(Error::conflict(format!(
                    "cannot publish {port}: {clash} is published already"
                )));
            }
            planned.push(port);
        }
        let sockets = planned
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        let before = self.state.docker_plugins.clone();
        if let Some(e) = self.plugin_mut(plugin)?.endpoints.get_mut(&id) {
            e.ports = planned.clone();
        }
        if let Err(e) = self.save() {
            self.state.docker_plugins = before;
            return Err(e);
        }
        let Some((_, gateway)) = self.gateways.get(&ep.network) else {
            return Err(Error::not_found("gateway of network", ep.network.clone()));
        };
        let mut served = Vec::new();
        for (port, socket) in planned.iter().zip(sockets) {
            let pid = self.next_publication;
            self.next_publication += 1;
            let Some(target) = PublishTarget::new(pid, (ep.ipv4, ep.ipv6), port.port, ep.mac)
            else {
                continue;
            };
            gateway.command(match socket {
                HostSocket::Tcp(l) => GatewayCommand::PublishTcp(target, l),
                HostSocket::Udp(s) => GatewayCommand::PublishUdp(target, s),
            });
            served.push((ep.network.clone(), pid));
        }
        self.docker_publications.insert(id, served);
        Ok(())
    }

    /// Stop serving an endpoint's published ports: they come out of the maps and the model;
    /// the teardown waits for the gateway.
    fn docker_revoke_external(
        &mut self,
        plugin: &str,
        id: &str,
        teardown: &mut Teardown,
    ) -> Result<()> {
        for (network, pid) in self.docker_publications.remove(id).unwrap_or_default() {
            if let Some((_, gateway)) = self.gateways.get(&network) {
                teardown.unpublish.push((gateway.commander(), pid));
            }
        }
        let before = self.state.docker_plugins.clone();
        if let Some(e) = self.plugin_mut(plugin)?.endpoints.get_mut(id)
            && !e.ports.is_empty()
        {
            e.ports.clear();
            if let Err(e) = self.save() {
                self.state.docker_plugins = before;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Leave, and the first half of DeleteEndpoint: the published ports, the TAP's fd and the
    /// switch port come out of the maps and the model; the teardown closes the ports, makes
    /// the TAP transient and removes the port (so the TAP goes). A Leave meanwhile finds
    /// nothing left to take, as after the first one.
    fn docker_leave(&mut self, plugin: &str, id: &str, teardown: &mut Teardown) -> Result<()> {
        self.docker_revoke_external(plugin, id, teardown)?;
        if let Some(fd) = self.docker_fds.remove(id) {
            let name = self
                .plugin(plugin)
                .ok()
                .and_then(|p| p.endpoints.get(id))
                .and_then(|e| e.tap.clone())
                .unwrap_or_default();
            teardown.taps.push((fd, name));
        }
        if let Some(port) = self.docker_ports.remove(id) {
            let unwired = match self.docker_endpoint(plugin, id) {
                Ok(ep) => self.detach_tap(&ep.network, port),
                Err(_) => drivers::Unwired {
                    port: Some(port),
                    plugin: None,
                },
            };
            teardown.endpoints.push(unwired);
        }
        let before = self.state.docker_plugins.clone();
        let Some(ep) = self.plugin_mut(plugin)?.endpoints.get_mut(id) else {
            return Ok(());
        };
        if ep.tap.is_none() {
            return Ok(());
        }
        ep.tap = None;
        ep.sandbox_key = None;
        if let Err(e) = self.save() {
            self.state.docker_plugins = before;
            return Err(e);
        }
        Ok(())
    }

    fn docker_delete_endpoint(
        &mut self,
        plugin: &str,
        id: &str,
        teardown: &mut Teardown,
    ) -> Result<()> {
        self.docker_leave(plugin, id, teardown)?;
        let Some(removed) = self.plugin_mut(plugin)?.endpoints.remove(id) else {
            return Ok(());
        };
        if let Err(e) = self.save() {
            self.plugin_mut(plugin)?
                .endpoints
                .insert(id.to_string(), removed);
            return Err(e);
        }
        Ok(())
    }
}

/// A Join's TAP as planned under the lock.
struct JoinPlan {
    tap: String,
    mac: MacAddr,
    mtu: u32,
    offload: Offload,
    /// The id of the endpoint's network as planned (a network made again meanwhile is another).
    net_id: String,
    /// The IPv4 gateway, for an endpoint with an IPv4 address.
    gateway: Option<Ipv4Addr>,
    /// The IPv6 default route dockerd puts in the container.
    gateway6: Option<Ipv6Addr>,
}

/// Make a Join's TAP in the daemon's namespace, persistent (slow: the TAP and its netlink
/// settings): its fd, which becomes the switch port, and a second one to make it transient at
/// Leave. On failure the TAP goes.
fn make_docker_tap(plan: &JoinPlan) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let tap = &plan.tap;
    // The fd is held before dockerd hears the name: after the move, opening the TAP by name
    // would make a new one instead.
    let fd = wiring::create_host_tap(tap, plan.mac, plan.mtu, plan.offload)?;
    // Persistent, so it stays in the container if the daemon restarts; a second fd lets Leave
    // undo that.
    tap::set_persist(&fd, tap, true)?;
    match fd.try_clone() {
        Ok(keep) => Ok((fd, keep)),
        Err(e) => {
            let _ = tap::set_persist(&fd, tap, false);
            Err(Error::invalid(format!(
                "duplicate the fd of TAP {tap}: {e}"
            )))
        }
    }
}

impl Controller {
    /// Join: checked and reserved under the lock, the TAP made without it, wired and committed
    /// under it.
    fn docker_join(&self, plugin: &str, req: p::JoinRequest) -> Result<p::JoinResponse> {
        let plan = self.lock().reserve_join(plugin, &req)?;
        let made = make_docker_tap(&plan);
        self.with_teardown(|inner, teardown| {
            inner.docker_joining.remove(&req.endpoint_id);
            inner.commit_join(plugin, &req, &plan, made?, teardown)
        })
    }
}

impl Inner {
    /// After a restart: attach again to the persistent TAPs of joined endpoints, found by MAC
    /// in their containers' namespaces. A TAP whose container is gone (dockerd moved it back
    /// here while the daemon was down) is removed, and the endpoint counts as left.
    pub(super) fn restore_docker(&mut self) {
        let joined: Vec<(String, String, DockerEndpoint)> = self
            .state
            .docker_plugins
            .iter()
            .flat_map(|p| {
                p.endpoints
                    .iter()
                    .filter(|(_, e)| e.tap.is_some())
                    .map(|(id, e)| (p.name.clone(), id.clone(), e.clone()))
            })
            .collect();
        for (plugin, id, ep) in joined {
            if let Err(e) = self.docker_reattach(&id, &ep) {
                eprintln!("tapnet: Docker endpoint {id}: cannot attach again: {e}");
                if let Some(name) = &ep.tap
                    && let Ok(fd) = tap::open_tap(name, Offload::Off)
                {
                    let _ = tap::set_persist(&fd, name, false);
                }
                if let Ok(p) = self.plugin_mut(&plugin)
                    && let Some(e) = p.endpoints.get_mut(&id)
                {
                    e.tap = None;
                    e.sandbox_key = None;
                }
                let _ = self.save();
            }
        }
    }

    fn docker_reattach(&mut self, id: &str, ep: &DockerEndpoint) -> Result<()> {
        let key = ep
            .sandbox_key
            .clone()
            .filter(|k| std::path::Path::new(k).exists())
            .ok_or_else(|| Error::conflict("its container's namespace is gone"))?;
        let net = self.network(&ep.network)?.clone();
        if !self.nets.contains_key(&net.name) {
            return Err(Error::not_found("network", &net.name));
        }
        let offload = bridge::offload_of(&self.ctx(), &net);
        let mac = ep.mac;
        let (fd, name) = in_netns(std::path::Path::new(&key), move || {
            let name = tap::link_with_mac(mac)?;
            Ok((tap::open_tap(&name, offload)?, name))
        })?;
        let keep = fd
            .try_clone()
            .map_err(|e| Error::invalid(format!("duplicate the fd of TAP {name}: {e}")))?;
        let label = format!(
            "docker:{}/{}",
            id.get(..12).unwrap_or(id),
            ep.tap.clone().unwrap_or_default()
        );
        let port = drivers::of(net.driver).attach_tap(
            &self.ctx(),
            &net,
            Tap {
                label,
                mac: ep.mac,
                // An IPv6-only endpoint sends no IPv4: port security admits none from it.
                ipv4: ep.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                ipv6: ep.ipv6,
                fds: TapFds::One(fd),
            },
        )?;
        self.docker_ports.insert(id.to_string(), port);
        self.docker_fds.insert(id.to_string(), keep);
        Ok(())
    }
}

impl Host for Controller {
    fn create_network(&self, plugin: &str, req: p::CreateNetworkRequest) -> Result<()> {
        self.with_teardown(|inner, t| inner.docker_create_network(plugin, req, t))
    }

    fn delete_network(&self, plugin: &str, req: p::NetworkRequest) -> Result<()> {
        let teardown = self.lock().docker_delete_network(plugin, &req.network_id)?;
        if let Some(t) = teardown {
            t.run();
        }
        Ok(())
    }

    fn create_endpoint(
        &self,
        plugin: &str,
        req: p::CreateEndpointRequest,
    ) -> Result<p::CreateEndpointResponse> {
        self.lock().docker_create_endpoint(plugin, req)
    }

    fn endpoint_info(
        &self,
        plugin: &str,
        req: p::EndpointRequest,
    ) -> Result<p::EndpointInfoResponse> {
        let inner = self.lock();
        let ep = inner.docker_endpoint(plugin, &req.endpoint_id)?;
        let mut value = BTreeMap::new();
        value.insert("network".to_string(), json!(ep.network));
        if let Some(ip) = ep.ipv4 {
            value.insert("ipv4".to_string(), json!(ip.to_string()));
        }
        if let Some(ip6) = ep.ipv6 {
            value.insert("ipv6".to_string(), json!(ip6.to_string()));
        }
        value.insert("mac".to_string(), json!(ep.mac.to_string()));
        value.insert("tap".to_string(), json!(ep.tap));
        Ok(p::EndpointInfoResponse { value })
    }

    fn delete_endpoint(&self, plugin: &str, req: p::EndpointRequest) -> Result<()> {
        self.with_teardown(|inner, t| inner.docker_delete_endpoint(plugin, &req.endpoint_id, t))
    }

    fn join(&self, plugin: &str, req: p::JoinRequest) -> Result<p::JoinResponse> {
        self.docker_join(plugin, req)
    }

    fn leave(&self, plugin: &str, req: p::EndpointRequest) -> Result<()> {
        self.with_teardown(|inner, t| inner.docker_leave(plugin, &req.endpoint_id, t))
    }

    fn program_external(&self, plugin: &str, req: p::ProgramExternalRequest) -> Result<()> {
        self.lock().docker_program_external(plugin, req)
    }

    fn revoke_external(&self, plugin: &str, req: p::EndpointRequest) -> Result<()> {
        self.with_teardown(|inner, t| inner.docker_revoke_external(plugin, &req.endpoint_id, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_addresses_of_both_families() {
        let (ip, prefix) = parse_cidr_addr6("a", "fd00:d0c::10/64").unwrap();
        assert_eq!(ip, "fd00:d0c::10".parse::<Ipv6Addr>().unwrap());
        assert_eq!(prefix, Some(64));
        assert_eq!(parse_cidr_addr6("a", "fd00::1").unwrap().1, None);
        for bad in ["fd00::1/129", "10.0.0.1/24", "fd00::1/x", ""] {
            assert!(parse_cidr_addr6("a", bad).is_err(), "{bad}");
        }
        assert!(parse_cidr_addr("a", "fd00::1/64").is_err());
    }
}
