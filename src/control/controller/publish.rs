//! Published ports: planning `-p`, handing host sockets to gateways, taking them back.

use super::*;
use crate::control::model::VmPort;

/// A publisher's addresses (IPv4, IPv6) and MAC on a network.
type Addresses = ((Option<Ipv4Addr>, Option<std::net::Ipv6Addr>), MacAddr);

impl Inner {
    /// Check `-p` specs: a bridge network to carry them, and no clash with what is published.
    pub(super) fn plan_ports(
        &self,
        specs: &[String],
        nets: &[Network],
    ) -> Result<Vec<PublishedPort>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let Some(carrier) = nets
            .iter()
            .find(|n| drivers::of(n.driver).publishes_ports() && !n.internal)
        else {
            return Err(Error::invalid(
                "publishing ports (-p) needs a non-internal bridge network",
            ));
        };
        let mut planned: Vec<PublishedPort> = Vec::new();
        for spec in specs {
            let port = ports::parse(spec, &carrier.name)?;
            validate::port_clash(&port, &planned, validate::publishers(&self.state))?;
            planned.push(port);
        }
        Ok(planned)
    }

    /// Hand a sandbox's bound host sockets to the gateways that serve them.
    pub(super) fn publish(&mut self, sb: &Sandbox, sockets: Vec<HostSocket>) {
        self.publish_to(&sb.name, &sb.ports, sockets, |network| {
            let ep = sb.endpoint(network)?;
            Some(((ep.ipv4, ep.ipv6), ep.mac?))
        });
    }

    /// Hand a VM port's bound host sockets to its network's gateway.
    pub(super) fn publish_vm_port(&mut self, p: &VmPort, sockets: Vec<HostSocket>) {
        self.publish_to(&p.name, &p.ports, sockets, |network| {
            (network == p.network).then_some(((p.ipv4, p.ipv6), p.mac))
        });
    }

    /// Hand `owner`'s bound host sockets to the gateways of `ports`' networks; `target` gives
    /// the owner's addresses and MAC on a network.
    fn publish_to(
        &mut self,
        owner: &str,
        ports: &[PublishedPort],
        sockets: Vec<HostSocket>,
        target: impl Fn(&str) -> Option<Addresses>,
    ) {
        for (port, socket) in ports.iter().zip(sockets) {
            let Some((addrs, mac)) = target(&port.network) else {
                continue;
            };
            let Some((_, gateway)) = self.gateways.get(&port.network) else {
                continue;
            };
            let id = self.next_publication;
            let Some(target) = PublishTarget::new(id, addrs, port.port, mac) else {
                continue;
            };
            self.next_publication += 1;
            gateway.command(match socket {
                HostSocket::Tcp(l) => GatewayCommand::PublishTcp(target, l),
                HostSocket::Udp(s) => GatewayCommand::PublishUdp(target, s),
            });
            self.publications
                .entry(owner.to_string())
                .or_default()
                .push((port.network.clone(), id));
        }
    }

    /// The gateways and ids of a sandbox's published ports, forgotten here; the teardown
    /// stops serving them.
    pub(super) fn take_publications(&mut self, sandbox: &str) -> Vec<(Commander, u64)> {
        self.publications
            .remove(sandbox)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(network, id)| {
                let (_, gateway) = self.gateways.get(&network)?;
                Some((gateway.commander(), id))
            })
            .collect()
    }
}
