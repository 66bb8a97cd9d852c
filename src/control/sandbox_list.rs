//! The model's sandboxes: a list in the order they were made (the state file's and the
//! journal's order), with an index of their names and of the addresses their endpoints take on
//! each network, kept by every change the list allows. A create looks up its name and picks an
//! address; with 10,000 sandboxes a scan of the list for each was most of what a create cost.
//!
//! The list reads as a slice (`Deref`); it changes only through the methods here, each of which
//! keeps the indexes. `iter_mut` and `at_mut` are for changes that keep every sandbox's name and
//! addresses (link impairments and blocks); debug builds check that the indexes still agree.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Sandbox;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Addresses taken on one network by sandboxes' endpoints, each with how many endpoints hold
/// it (more than one only in a state that validation refuses, but then still counted right).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkAddresses {
    pub v4: FastMap<Ipv4Addr, u32>,
    pub v6: FastMap<Ipv6Addr, u32>,
}

#[derive(Clone, Debug, Default)]
pub struct SandboxList {
    list: Vec<Arc<Sandbox>>,
    /// Name to position in `list`; the first of two with one name (which validation refuses).
    at: FastMap<String, usize>,
    /// Network name to the addresses its sandboxes' endpoints take.
    taken: FastMap<String, NetworkAddresses>,
}

impl SandboxList {
    /// The sandbox named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Sandbox>> {
        self.check();
        self.at.get(name).map(|&i| &self.list[i])
    }

    /// Where sandbox `name` is in the list.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.check();
        self.at.get(name).copied()
    }

    /// The addresses sandboxes' endpoints take on `network`.
    pub fn taken_on(&self, network: &str) -> Option<&NetworkAddresses> {
        self.check();
        self.taken.get(network)
    }

    pub fn push(&mut self, sb: Arc<Sandbox>) {
        if !self.at.contains_key(sb.name.as_str()) {
            self.at.insert(sb.name.clone(), self.list.len());
        }
        self.count(&sb, true);
        self.list.push(sb);
    }

    pub fn pop(&mut self) -> Option<Arc<Sandbox>> {
        let sb = self.list.pop()?;
        // The last holds its name's entry only if it is the only one of that name.
        if self.at.get(sb.name.as_str()) == Some(&self.list.len()) {
            self.at.remove(sb.name.as_str());
        }
        self.count(&sb, false);
        Some(sb)
    }

    /// Take the sandbox at `index` out; those after it move up one.
    pub fn remove(&mut self, index: usize) -> Arc<Sandbox> {
        let sb = self.list.remove(index);
        self.count(&sb, false);
        for i in index..self.list.len() {
            if let Some(at) = self.at.get_mut(self.list[i].name.as_str())
                && *at == i + 1
            {
                *at = i;
            }
        }
        self.drop_name(&sb.name, index, index);
        sb
    }

    /// Put `sb` at `index`; those from there on move down one.
    pub fn insert(&mut self, index: usize, sb: Arc<Sandbox>) {
        self.count(&sb, true);
        self.list.insert(index, sb);
        for i in index + 1..self.list.len() {
            if let Some(at) = self.at.get_mut(self.list[i].name.as_str())
                && *at == i - 1
            {
                *at = i;
            }
        }
        self.take_name(index);
    }

    /// Put `sb` in the place of the sandbox at `index`.
    pub fn replace(&mut self, index: usize, sb: Arc<Sandbox>) -> Arc<Sandbox> {
        self.count(&sb, true);
        let old = std::mem::replace(&mut self.list[index], sb);
        self.count(&old, false);
        if old.name != self.list[index].name {
            self.drop_name(&old.name, index, index + 1);
            self.take_name(index);
        }
        old
    }

    /// Change the sandbox at `index` in place (copied first if shared): its name and addresses
    /// may change, the indexes follow.
    pub fn edit<T>(&mut self, index: usize, change: impl FnOnce(&mut Sandbox) -> T) -> T {
        let mut sb = self.list[index].clone();
        let out = change(Arc::make_mut(&mut sb));
        self.replace(index, sb);
        out
    }

    /// Every sandbox, to change what is neither its name nor an endpoint's network or
    /// address (link settings): those are indexed.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Arc<Sandbox>> {
        self.list.iter_mut()
    }

    /// The sandbox at `index`, to change what `iter_mut` may.
    pub fn at_mut(&mut self, index: usize) -> &mut Arc<Sandbox> {
        &mut self.list[index]
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.at.clear();
        self.taken.clear();
    }

    /// Sandbox `name` is no longer at `index`: if it held the name's entry, the next of that
    /// name from `from` on (in a state being validated) holds it, or the entry goes.
    fn drop_name(&mut self, name: &str, index: usize, from: usize) {
        if self.at.get(name) != Some(&index) {
            return;
        }
        match self.list[from..].iter().position(|s| s.name == name) {
            Some(k) => self.at.insert(name.to_string(), from + k),
            None => self.at.remove(name),
        };
    }

    /// The sandbox now at `index` holds its name's entry unless one before it does.
    fn take_name(&mut self, index: usize) {
        let name = self.list[index].name.as_str();
        match self.at.get_mut(name) {
            Some(at) if *at > index => *at = index,
            Some(_) => {}
            None => {
                self.at.insert(name.to_string(), index);
            }
        }
    }

    /// Count `sb`'s addresses in (`add`) or out of the networks' tables.
    fn count(&mut self, sb: &Sandbox, add: bool) {
        for ep in &sb.endpoints {
            if ep.ipv4.is_none() && ep.ipv6.is_none() {
                continue;
            }
            let net = match self.taken.get_mut(ep.network.as_str()) {
                Some(net) => net,
                None => self.taken.entry(ep.network.clone()).or_default(),
            };
            if let Some(ip) = ep.ipv4 {
                tally(&mut net.v4, ip, add);
            }
            if let Some(ip) = ep.ipv6 {
                tally(&mut net.v6, ip, add);
            }
            if net.v4.is_empty() && net.v6.is_empty() {
                self.taken.remove(ep.network.as_str());
            }
        }
    }

    /// The indexes made anew from the list.
    fn indexed(list: Vec<Arc<Sandbox>>) -> Self {
        let mut this = SandboxList {
            list: Vec::with_capacity(list.len()),
            ..SandboxList::default()
        };
        for sb in list {
            this.push(sb);
        }
        this
    }

    /// Debug builds: the indexes agree with the list (an `iter_mut` that changed a name or an
    /// address would be caught at the next lookup).
    fn check(&self) {
        #[cfg(debug_assertions)]
        {
            let again = Self::indexed(self.list.clone());
            debug_assert_eq!(again.at, self.at, "sandbox name index out of date");
            debug_assert_eq!(again.taken, self.taken, "sandbox address index out of date");
        }
    }
}

fn tally<A: std::hash::Hash + Eq>(map: &mut FastMap<A, u32>, ip: A, add: bool) {
    if add {
        *map.entry(ip).or_default() += 1;
    } else if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl std::ops::Deref for SandboxList {
    type Target = [Arc<Sandbox>];
    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl PartialEq for SandboxList {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl From<Vec<Arc<Sandbox>>> for SandboxList {
    fn from(list: Vec<Arc<Sandbox>>) -> Self {
        Self::indexed(list)
    }
}

impl FromIterator<Arc<Sandbox>> for SandboxList {
    fn from_iter<I: IntoIterator<Item = Arc<Sandbox>>>(iter: I) -> Self {
        Self::indexed(iter.into_iter().collect())
    }
}

impl Extend<Arc<Sandbox>> for SandboxList {
    fn extend<I: IntoIterator<Item = Arc<Sandbox>>>(&mut self, iter: I) {
        for sb in iter {
            self.push(sb);
        }
    }
}

impl<'a> IntoIterator for &'a SandboxList {
    type Item = &'a Arc<Sandbox>;
    type IntoIter = std::slice::Iter<'a, Arc<Sandbox>>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl Serialize for SandboxList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SandboxList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Arc<Sandbox>>::deserialize(d).map(Self::indexed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::Endpoint;

    fn sandbox(name: &str, net: &str, ip: u8) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            name: name.into(),
            id: String::new(),
            hostname: name.into(),
            endpoints: vec![Endpoint {
                id: String::new(),
                network: net.into(),
                interface: Some("eth0".into()),
                mac: None,
                ipv4: Some(Ipv4Addr::new(10, 0, 0, ip)),
                ipv6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, ip.into())),
                aliases: Vec::new(),
                impairment: None,
                blocked: Vec::new(),
            }],
            ports: Vec::new(),
        })
    }

    fn names(list: &SandboxList) -> Vec<&str> {
        list.iter().map(|s| s.name.as_str()).collect()
    }

    fn v4_on(list: &SandboxList, net: &str) -> Vec<u8> {
        let mut ips: Vec<u8> = list
            .taken_on(net)
            .map(|t| t.v4.keys().map(|ip| ip.octets()[3]).collect())
            .unwrap_or_default();
        ips.sort();
        ips
    }

    #[test]
    fn every_change_keeps_names_and_addresses_indexed() {
        let mut list: SandboxList = ["a", "b", "c", "d"]
            .iter()
            .zip(1..)
            .map(|(n, ip)| sandbox(n, "x", ip))
            .collect();
        assert_eq!(list.position("c"), Some(2));
        assert_eq!(v4_on(&list, "x"), [1, 2, 3, 4]);

        let b = list.remove(1);
        assert_eq!(b.name, "b");
        assert_eq!(list.position("b"), None);
        assert_eq!(list.position("d"), Some(2));
        assert_eq!(v4_on(&list, "x"), [1, 3, 4]);

        list.insert(1, b);
        assert_eq!(names(&list), ["a", "b", "c", "d"]);
        assert_eq!(list.position("d"), Some(3));

        list.replace(0, sandbox("a", "y", 9));
        assert_eq!(v4_on(&list, "x"), [2, 3, 4]);
        assert_eq!(v4_on(&list, "y"), [9]);

        list.edit(3, |sb| {
            sb.endpoints[0].ipv4 = Some(Ipv4Addr::new(10, 0, 0, 40))
        });
        assert_eq!(v4_on(&list, "x"), [2, 3, 40]);
        list.edit(2, |sb| sb.name = "c2".into());
        assert_eq!((list.position("c"), list.position("c2")), (None, Some(2)));

        assert_eq!(list.pop().map(|s| s.name.clone()).as_deref(), Some("d"));
        assert_eq!(list.get("d"), None);
        assert_eq!(v4_on(&list, "x"), [2, 3]);
        list.clear();
        assert!(list.taken_on("y").is_none() && list.is_empty());
    }

    #[test]
    fn an_address_two_endpoints_hold_stays_taken_until_both_let_go() {
        let mut list: SandboxList = vec![sandbox("a", "x", 5), sandbox("b", "x", 5)].into();
        list.remove(0);
        assert_eq!(v4_on(&list, "x"), [5]);
        list.remove(0);
        assert!(list.taken_on("x").is_none());
    }

    #[test]
    fn a_duplicate_name_finds_the_first_until_it_goes() {
        let mut list: SandboxList = vec![sandbox("a", "x", 1), sandbox("a", "x", 2)].into();
        assert_eq!(
            list.get("a").and_then(|s| s.endpoints[0].ipv4),
            Some([10, 0, 0, 1].into())
        );
        list.remove(0);
        assert_eq!(
            list.get("a").and_then(|s| s.endpoints[0].ipv4),
            Some([10, 0, 0, 2].into())
        );
    }

    #[test]
    fn it_reads_and_writes_as_the_list_it_was() {
        let list: SandboxList = vec![sandbox("a", "x", 1), sandbox("b", "x", 2)].into();
        let json = serde_json::to_string(&list).unwrap();
        let plain = serde_json::to_string(&list.to_vec()).unwrap();
        assert_eq!(json, plain);
        let back: SandboxList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
        assert_eq!(back.position("b"), Some(1));
    }
}
