//! Ports that are not sandboxes' TAPs (`tapnet port add/ls/rm`): a VM on a unix stream
//! socket, a VM of a vhost-user socket (`datapath/vhost_user_port.rs`), or an existing interface through a packet socket (`datapath/packet_port.rs`). The port is a station of its network like a sandbox's endpoint (an IPAM address, a
//! MAC of 02:42 and its IPv4 address, port security, a name in the gateway's DNS); its switch
//! port is a socketpair whose other end a `vm-NAME` thread moves to and from the VM's socket
//! (`datapath/stream_port.rs`).

use super::*;
use crate::api::types::{PortAdd, PortView};
use crate::control::model::{VmPort, VmPortKind};
use crate::datapath::packet_port::{self, IfaceGuard};
use crate::datapath::stream_port::StreamPort;
use crate::datapath::vhost_user_port::VhostUserPort;

/// A VM port being served: its switch port and what serves it.
pub(super) struct ServedPort {
    port: PortId,
    side: Side,
}

/// The thread on a socket port, or the restorer of an interface's state.
enum Side {
    Stream(StreamPort),
    VhostUser(VhostUserPort),
    /// The guard is held for its drop.
    Iface {
        _restore: IfaceGuard,
        io: packet_port::Io,
    },
}

impl Controller {
    /// `port add`, `port ls`, `port rm`. A removal stops the port's thread and takes it out of
    /// the datapath without the lock.
    pub(super) fn port_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
        match request {
            Request::PortAdd(req) => inner.port_add(&req).and_then(|v| value(&v)),
            Request::PortList { network } => {
                if let Some(n) = &network {
                    inner.network(n)?;
                }
                let views: Vec<PortView> = inner
                    .state
                    .vm_ports
                    .iter()
                    .filter(|p| network.as_ref().is_none_or(|n| *n == p.network))
                    .map(|p| inner.port_view(p))
                    .collect();
                value(&views)
            }
            Request::PortRemove { name } => {
                let served = inner.port_remove(&name)?;
                let dp = inner.dp.clone();
                let mut teardown = Teardown::new(dp.clone());
                teardown.unpublish = inner.take_publications(&name);
                drop(inner);
                teardown.run();
                if let Some(s) = served {
                    dp.remove_port(s.port);
                    drop(s.side);
                }
                Ok(json!({"removed": name}))
            }
            _ => Err(misrouted("port")),
        }
    }
}

impl Inner {
    fn port_view(&self, p: &VmPort) -> PortView {
        let net = self.state.network(&p.network);
        let stats = match self.vm_ports.get(&p.name).map(|s| &s.side) {
            Some(Side::Stream(stream)) => stream.counters.snapshot(),
            Some(Side::VhostUser(vhu)) => vhu.counters.snapshot(),
            Some(Side::Iface { .. }) => crate::datapath::stream_port::StreamStats {
                connected: true,
                ..Default::default()
            },
            None => Default::default(),
        };
        PortView {
            name: p.name.clone(),
            network: p.network.clone(),
            kind: p.kind.name().to_string(),
            path: p.path.clone(),
            io: match self.vm_ports.get(&p.name).map(|s| &s.side) {
                Some(Side::Iface { io, .. }) => Some(io.name().to_string()),
                _ => None,
            },
            mac: p.mac.to_string(),
            ipv4: p.ipv4.map(|ip| {
                format!(
                    "{ip}/{}",
                    net.and_then(|n| n.subnet).map_or(32, |s| s.prefix)
                )
            }),
            ipv6: p.ipv6.map(|ip| {
                format!(
                    "{ip}/{}",
                    net.and_then(|n| n.subnet6).map_or(128, |s| s.prefix)
                )
            }),
            connected: stats.connected,
            connections: stats.connections,
            to_vm_dropped: stats.to_vm_dropped,
            to_vm_absent: stats.to_vm_absent,
            impairment: p.impairment.clone(),
            blocked: p.blocked.clone(),
            ports: p.ports.iter().map(|pp| pp.to_string()).collect(),
        }
    }

    /// Check and plan the port, wire it and commit it; nothing is left behind on failure.
    fn port_add(&mut self, req: &PortAdd) -> Result<PortView> {
        validate_name("port", &req.name).map_err(Error::Invalid)?;
        let planning = self.planning_state();
        if planning.sandbox(&req.name).is_some() || self.removing.contains(&req.name) {
            return Err(Error::conflict(format!(
                "port {}: a sandbox has that name (ports and sandboxes share the names of the \
                 gateway's DNS)",
                req.name
            )));
        }
        if planning.vm_ports.iter().any(|p| p.name == req.name) {
            return Err(Error::exists("port", &req.name));
        }
        let (kind, path) = match (&req.qemu_socket, &req.vhost_user, &req.iface) {
            (Some(path), None, None) => {
                validate::vm_port_path(path)?;
                (VmPortKind::QemuSocket, path.clone())
            }
            (None, Some(path), None) => {
                validate::vm_port_path(path)?;
                (VmPortKind::VhostUser, path.clone())
            }
            (None, None, Some(iface)) => {
                crate::cni::validate_ifname(iface)
                    .map_err(|e| Error::invalid(format!("--iface {iface:?}: {e}")))?;
                if !matches!(self.mode, Mode::Root) {
                    return Err(Error::invalid(
                        "--iface needs a root daemon (an interface of the host's namespace)",
                    ));
                }
                (VmPortKind::Iface, iface.clone())
            }
            _ => {
                return Err(Error::usage(
                    "port add needs exactly one of --qemu-socket PATH, --vhost-user PATH and \
                     --iface IFNAME",
                ));
            }
        };
        if let Some(other) = planning
            .vm_ports
            .iter()
            .find(|p| p.path == path && p.kind.is_socket() == kind.is_socket())
        {
            return Err(Error::conflict(format!("{path} is port {}'s", other.name)));
        }
        let net = self.network(&req.network)?.clone();
        if !drivers::of(net.driver).takes_taps() || !self.nets.contains_key(&net.name) {
            return Err(Error::invalid(format!(
                "network {} (driver {}) has no switch for a port",
                net.name,
                net.driver.name()
            )));
        }
        if self.needs_claims(std::slice::from_ref(&net.name)) {
            return Err(Error::invalid(format!(
                "network {} is in the cluster store: ports on it are not supported yet",
                net.name
            )));
        }
        // The addresses as a sandbox's endpoint would get them.
        let probe = Sandbox {
            name: req.name.clone(),
            id: String::new(),
            hostname: req.name.clone(),
            endpoints: Vec::new(),
            ports: Vec::new(),
        };
        let ep = endpoints::plan_endpoint(
            &planning,
            &probe,
            &net,
            req.ip.as_deref(),
            req.ip6.as_deref(),
            Vec::new(),
        )?;
        let mac = match &req.mac {
            Some(m) => {
                let mac: MacAddr = m
                    .parse()
                    .map_err(|e| Error::invalid(format!("--mac {m:?}: {e}")))?;
                if mac.is_multicast() || mac.is_zero() {
                    return Err(Error::invalid(format!("--mac {mac}: not a unicast MAC")));
                }
                let taken = planning
                    .endpoints_on(&net.name)
                    .any(|(_, e)| e.mac == Some(mac))
                    || planning
                        .cni
                        .iter()
                        .any(|a| a.network == net.name && a.mac == mac)
                    || planning
                        .vm_ports
                        .iter()
                        .any(|p| p.network == net.name && p.mac == mac);
                if taken {
                    return Err(Error::conflict(format!(
                        "--mac {mac} is taken on network {}",
                        net.name
                    )));
                }
                mac
            }
            None => ep
                .mac
                .ok_or_else(|| Error::invalid(format!("network {} has no subnet", net.name)))?,
        };
        drop(planning);
        let published = self.plan_ports(&req.publish, std::slice::from_ref(&net))?;
        // Bound before anything is made: a taken host port fails the request cleanly.
        let sockets = published
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        let mut port = VmPort {
            name: req.name.clone(),
            network: net.name.clone(),
            kind,
            path,
            mac,
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            was_down: false,
            impairment: None,
            blocked: Vec::new(),
            ports: published,
        };
        self.port_wire(&port, &net, false)?;
        // Remembered so that `port rm` after a restart still puts it back down.
        if let Some(ServedPort {
            side: Side::Iface {
                _restore: guard, ..
            },
            ..
        }) = self.vm_ports.get(&port.name)
        {
            port.was_down = !guard.was_up();
        }
        self.state.vm_ports.push(port.clone());
        if let Err(e) = self.save() {
            self.state.vm_ports.pop();
            if let Some(s) = self.vm_ports.remove(&port.name) {
                self.dp.remove_port(s.port);
            }
            return Err(e);
        }
        self.publish_vm_port(&port, sockets);
        Ok(self.port_view(&port))
    }

    /// The switch port and the socket's thread. `replace_socket`: a socket left at the path
    /// (by this daemon before a restart) is taken over.
    fn port_wire(&mut self, p: &VmPort, net: &Network, replace_socket: bool) -> Result<()> {
        let net_id = self
            .nets
            .get(&net.name)
            .copied()
            .ok_or_else(|| Error::invalid(format!("network {} has no switch", net.name)))?;
        // An IPv6-only port sends no IPv4: port security admits none from it.
        let policy = drivers::bridge::port_policy(
            net,
            p.mac,
            p.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            p.ipv6,
        )?;
        let what = |e: Error| Error::invalid(format!("port {}: {e}", p.name));
        let (side, fd) = match p.kind {
            VmPortKind::QemuSocket => {
                let (switch_end, port_end) = drivers::bridge::gateway_port()?;
                let stream = StreamPort::start(
                    &p.name,
                    std::path::Path::new(&p.path),
                    replace_socket,
                    port_end,
                )
                .map_err(what)?;
                (Side::Stream(stream), switch_end)
            }
            VmPortKind::VhostUser => {
                let (switch_end, port_end) = drivers::bridge::gateway_port()?;
                let vhu = VhostUserPort::start(
                    &p.name,
                    std::path::Path::new(&p.path),
                    replace_socket,
                    port_end,
                )
                .map_err(what)?;
                (Side::VhostUser(vhu), switch_end)
            }
            // The packet socket is the port's fd: no socketpair, no thread. Its rings are read
            // and written by the workers through their mio poll, with either I/O.
            VmPortKind::Iface => {
                let rings = packet_port::rings_wanted();
                let opened = packet_port::open(&p.path, p.was_down, rings).map_err(what)?;
                let io = if opened.ring.is_some() {
                    packet_port::Io::Ring
                } else {
                    packet_port::Io::Plain
                };
                let side = Side::Iface {
                    _restore: opened.guard,
                    io,
                };
                let label = format!("port:{}", p.name);
                let port = match opened.ring {
                    Some(ring) => self
                        .dp
                        .add_ring_port(net_id, label, opened.fd, ring, policy)?,
                    None => self.dp.add_port(net_id, label, opened.fd, policy)?,
                };
                self.vm_ports
                    .insert(p.name.clone(), ServedPort { port, side });
                self.sync_port_links(p);
                return Ok(());
            }
        };
        let port = self
            .dp
            .add_port(net_id, format!("port:{}", p.name), fd, policy)?;
        self.vm_ports
            .insert(p.name.clone(), ServedPort { port, side });
        self.sync_port_links(p);
        Ok(())
    }

    /// A new port's link impairments and blocks (kept in the model across restarts), and its
    /// partners' blocks of it.
    fn sync_port_links(&self, p: &VmPort) {
        links::sync(
            &self.state,
            &self.ports,
            &self.dp,
            &p.network,
            Some(&p.name),
            |n| self.served_port(n),
        );
    }

    /// The port out of the model and the maps; the caller removes its switch port and stops
    /// its thread (`None`: it was not being served).
    fn port_remove(&mut self, name: &str) -> Result<Option<ServedPort>> {
        let i = self
            .state
            .vm_ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error::not_found("port", name))?;
        let removed = self.state.vm_ports.remove(i);
        let forgotten = links::forget(&mut self.state, name, None);
        if let Err(e) = self.save() {
            self.state.vm_ports.insert(i, removed);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
        let served = self.vm_ports.remove(name);
        // Port ids are reused once the port is removed: partners must stop naming this one.
        links::sync(
            &self.state,
            &self.ports,
            &self.dp,
            &removed.network,
            None,
            |n| self.served_port(n),
        );
        Ok(served)
    }

    /// The switch port of VM port `name`, if it is served.
    pub(super) fn served_port(&self, name: &str) -> Option<PortId> {
        self.vm_ports.get(name).map(|s| s.port)
    }

    /// The switch port of VM port `name` on `network`, if it is served.
    pub(super) fn vm_port_id(&self, network: &str, name: &str) -> Option<PortId> {
        self.state
            .vm_ports
            .iter()
            .any(|p| p.name == name && p.network == network)
            .then(|| self.vm_ports.get(name).map(|s| s.port))
            .flatten()
    }

    /// After a restart: listen again on every port's socket, and publish its host ports.
    pub(super) fn restore_vm_ports(&mut self) {
        for p in self.state.vm_ports.clone() {
            let wired = self
                .network(&p.network)
                .cloned()
                .and_then(|net| self.port_wire(&p, &net, true))
                .and_then(|_| p.ports.iter().map(ports::bind).collect::<Result<Vec<_>>>());
            match wired {
                Ok(sockets) => self.publish_vm_port(&p, sockets),
                Err(e) => eprintln!("tapnet: cannot restore port {}: {e}", p.name),
            }
        }
    }

    /// Names of the gateway's DNS for the ports of `network`: (name, IPv4, IPv6).
    pub(super) fn port_names(
        &self,
        network: &str,
    ) -> impl Iterator<Item = (&str, Option<Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        self.state
            .vm_ports
            .iter()
            .filter(move |p| p.network == network)
            .map(|p| (p.name.as_str(), p.ipv4, p.ipv6))
    }
}
