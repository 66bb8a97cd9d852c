//! What each network's gateway answers from the model: DNS names (sandboxes, their aliases,
//! VM ports, other hosts' sandboxes) and DHCP leases. Made whole for a network when anything
//! but sandboxes changed; edited one sandbox at a time when a commit only put or deleted
//! sandboxes (every create), so that a create costs the same with 10,000 names as with 10.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Inner, networks_in};
use crate::control::model::{Endpoint, Sandbox};
use crate::gateway::dhcp::LeaseTable;
use crate::gateway::dns::{NameEntry, NameTable};

impl Inner {
    /// Give every user-defined network's DNS the names and aliases of its sandboxes, each also
    /// as NAME.NETWORK, and the reverse (PTR) names of their addresses. The default `bridge`
    /// network resolves no sandbox names, as in Docker.
    pub(super) fn sync_names(&self) {
        self.sync_names_on(None);
    }

    /// `sync_names` for the networks in `only` (all with `None`): their tables made anew.
    pub(super) fn sync_names_on(&self, only: Option<&HashSet<String>>) {
        self.sync_leases(only);
        for net in networks_in(&self.state, only) {
            let Some((_, gateway)) = self.gateways.get(&net.name) else {
                continue;
            };
            let mut table = NameTable::new();
            let network = net.name.to_lowercase();
            if !net.builtin {
                let mut add = |entry| table.insert(entry);
                for (sb, ep) in self.state.endpoints_on(&net.name) {
                    endpoint_entries(&network, sb, ep, &mut add);
                }
                // VMs' ports, named as sandboxes are.
                for (name, ipv4, ipv6) in self.port_names(&net.name) {
                    station_entries(&network, name, ipv4, ipv6, true, &mut add);
                }
                // Sandboxes of other hosts (the cluster store). (CNI attachments have no
                // names, here or there: their records' names have a `:`.)
                let named = self
                    .remote_eps
                    .values()
                    .filter(|r| !r.sandbox.contains(':') && r.network == net.name);
                for rec in named {
                    let (v4, v6) = (rec.ipv4(), rec.ipv6_addr());
                    station_entries(&network, &rec.sandbox, v4, v6, true, &mut add);
                }
            }
            gateway.set_names(table);
        }
    }

    /// Give every network's DHCP server (of the networks in `only`; all with `None`) the MAC
    /// and IPv4 address of each of its endpoints: it answers those MACs, with those addresses,
    /// and no others.
    pub(super) fn sync_leases(&self, only: Option<&HashSet<String>>) {
        for net in networks_in(&self.state, only) {
            let Some((_, gateway)) = self.gateways.get(&net.name) else {
                continue;
            };
            let mut table = LeaseTable::new();
            for (_, ep) in self.state.endpoints_on(&net.name) {
                if let (Some(mac), Some(ip)) = (ep.mac, ep.ipv4) {
                    table.add(mac, ip);
                }
            }
            // A VM's port: its guest usually configures itself by DHCP.
            for port in self.state.vm_ports.iter().filter(|p| p.network == net.name) {
                if let Some(ip) = port.ipv4 {
                    table.add(port.mac, ip);
                }
            }
            gateway.set_leases(table);
        }
    }

    /// After a commit that only put or deleted `changed` sandboxes (each with its version
    /// before the commit): take the old versions' names and leases out of their networks'
    /// tables and put the new ones' in.
    pub(super) fn edit_names(&self, changed: &[(String, Option<Sandbox>)]) {
        for (name, before) in changed {
            if let Some(before) = before {
                for ep in &before.endpoints {
                    self.edit_endpoint(before, ep, false);
                }
            }
            if let Some(after) = self.state.sandbox(name) {
                for ep in &after.endpoints {
                    self.edit_endpoint(after, ep, true);
                }
            }
        }
    }

    fn edit_endpoint(&self, sb: &Sandbox, ep: &Endpoint, add: bool) {
        let Some((_, gateway)) = self.gateways.get(&ep.network) else {
            return;
        };
        if let (Some(mac), Some(ip)) = (ep.mac, ep.ipv4) {
            gateway.edit_leases(|t| match add {
                true => t.add(mac, ip),
                false => t.remove(mac, ip),
            });
        }
        if self.state.network(&ep.network).is_none_or(|n| n.builtin) {
            return;
        }
        let network = ep.network.to_lowercase();
        gateway.edit_names(|table| {
            endpoint_entries(&network, sb, ep, &mut |entry| match add {
                true => table.insert(entry),
                false => table.remove(&entry),
            })
        });
    }
}

/// The answers sandbox `sb`'s endpoint `ep` gives on its network (`network` lowercased): its
/// name and aliases, each also as NAME.NETWORK, and PTR answers naming it NAME.NETWORK, as
/// Docker's embedded DNS does.
fn endpoint_entries(network: &str, sb: &Sandbox, ep: &Endpoint, add: &mut impl FnMut(NameEntry)) {
    station_entries(network, &sb.name, ep.ipv4, ep.ipv6, true, add);
    for alias in &ep.aliases {
        station_entries(network, alias, ep.ipv4, ep.ipv6, false, add);
    }
}

/// `name` and NAME.NETWORK resolving to the addresses, and, with `ptr`, the addresses' PTR
/// answers naming NAME.NETWORK.
fn station_entries(
    network: &str,
    name: &str,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    ptr: bool,
    add: &mut impl FnMut(NameEntry),
) {
    let name = name.to_lowercase();
    let qualified = format!("{name}.{network}");
    if let Some(ip) = ipv4 {
        add(NameEntry::V4(qualified.clone(), ip));
        add(NameEntry::V4(name.clone(), ip));
        if ptr {
            add(NameEntry::Reverse(ip, qualified.clone()));
        }
    }
    if let Some(ip) = ipv6 {
        add(NameEntry::V6(qualified.clone(), ip));
        add(NameEntry::V6(name, ip));
        if ptr {
            add(NameEntry::ReverseV6(ip, qualified));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str, last: u8, aliases: &[&str]) -> Sandbox {
        let mut sb = (*crate::control::validate::tests::world().sandboxes[0]).clone();
        sb.name = name.into();
        let ep = &mut sb.endpoints[0];
        ep.ipv4 = Some(Ipv4Addr::new(10, 0, 0, last));
        ep.ipv6 = Some(format!("fd00::{last}").parse().unwrap());
        ep.aliases = aliases.iter().map(|a| a.to_string()).collect();
        sb
    }

    fn table_of(sandboxes: &[&Sandbox]) -> NameTable {
        let mut table = NameTable::new();
        for sb in sandboxes {
            endpoint_entries("net", sb, &sb.endpoints[0], &mut |e| table.insert(e));
        }
        table.normalized()
    }

    /// Adding and removing sandboxes one at a time leaves the table that making it whole from
    /// the sandboxes left gives, shared names (an alias that is another's name) included.
    #[test]
    fn edits_agree_with_a_table_made_whole() {
        let a = sandbox("A", 2, &["web", "b"]);
        let b = sandbox("b", 3, &["web"]);
        let c = sandbox("c", 4, &[]);
        let mut table = NameTable::new();
        for sb in [&a, &b, &c] {
            endpoint_entries("net", sb, &sb.endpoints[0], &mut |e| table.insert(e));
        }
        assert_eq!(table.clone().normalized(), table_of(&[&a, &b, &c]));
        endpoint_entries("net", &a, &a.endpoints[0], &mut |e| table.remove(&e));
        assert_eq!(table.clone().normalized(), table_of(&[&b, &c]));
        assert_ne!(table_of(&[&b, &c]), table_of(&[&a, &b, &c]), "the control");
        endpoint_entries("net", &b, &b.endpoints[0], &mut |e| table.remove(&e));
        endpoint_entries("net", &c, &c.endpoints[0], &mut |e| table.remove(&e));
        assert_eq!(table, NameTable::new());
    }
}
