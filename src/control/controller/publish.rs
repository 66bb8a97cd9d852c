//! Published ports: planning `-p`, handing host sockets to gateways, taking them back.

use super::*;

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
            validate::port_clash(&port, &planned, &self.state.sandboxes)?;
            planned.push(port);
        }
        Ok(planned)
    }

    /// Hand bound host sockets to the gateways that serve them.
    pub(super) fn publish(&mut self, sb: &Sandbox, sockets: Vec<HostSocket>) {
        for (port, socket) in sb.ports.iter().zip(sockets) {
            let Some(ep) = sb.endpoint(&port.network) else {
                continue;
            };
            let Some(mac) = ep.mac else {
                continue;
            };
            let Some((_, gateway)) = self.gateways.get(&port.network) else {
                continue;
            };
            let id = self.next_publication;
            let Some(target) = PublishTarget::new(id, (ep.ipv4, ep.ipv6), port.port, mac) else {
                continue;
            };
            self.next_publication += 1;
            gateway.command(match socket {
                HostSocket::Tcp(l) => GatewayCommand::PublishTcp(target, l),
                HostSocket::Udp(s) => GatewayCommand::PublishUdp(target, s),
            });
            self.publications
                .entry(sb.name.clone())
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
