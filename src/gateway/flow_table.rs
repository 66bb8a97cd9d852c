//! The bookkeeping every NAT table shares: flows found by their poll token (events from host
//! sockets) or by their key (frames from sandboxes), and removed by a condition. It counts the
//! flows of each sandbox, for the per-sandbox caps.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mio::Token;

/// A flow key that names the sandbox the flow belongs to (its first field).
pub trait SandboxKey {
    fn sandbox(&self) -> IpAddr;
}

impl SandboxKey for (Ipv4Addr, u16, Ipv4Addr, u16) {
    fn sandbox(&self) -> IpAddr {
        self.0.into()
    }
}

impl SandboxKey for (Ipv4Addr, u16, Ipv4Addr) {
    fn sandbox(&self) -> IpAddr {
        self.0.into()
    }
}

impl SandboxKey for (Ipv6Addr, u16, Ipv6Addr) {
    fn sandbox(&self) -> IpAddr {
        self.0.into()
    }
}

impl SandboxKey for (Ipv6Addr, u16, Ipv6Addr, u16) {
    fn sandbox(&self) -> IpAddr {
        self.0.into()
    }
}

/// How many flows one sandbox, and the whole gateway, may hold in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    pub per_sandbox: usize,
    pub per_gateway: usize,
}

pub struct FlowTable<K, F> {
    flows: HashMap<Token, (K, F)>,
    by_key: HashMap<K, Token>,
    per_sandbox: HashMap<IpAddr, usize>,
}

impl<K, F> Default for FlowTable<K, F> {
    fn default() -> Self {
        FlowTable {
            flows: HashMap::new(),
            by_key: HashMap::new(),
            per_sandbox: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + SandboxKey, F> FlowTable<K, F> {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Flows of the sandbox at `ip`.
    pub fn count_of(&self, ip: impl Into<IpAddr>) -> usize {
        self.per_sandbox.get(&ip.into()).copied().unwrap_or(0)
    }

    /// Would a new flow for `sandbox` break `limits`? Which one: the sandbox's own (true) or
    /// the gateway's (false).
    pub fn over(&self, sandbox: impl Into<IpAddr>, limits: FlowLimits) -> Option<bool> {
        if self.count_of(sandbox) >= limits.per_sandbox {
            Some(true)
        } else if self.len() >= limits.per_gateway {
            Some(false)
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn owns(&self, token: Token) -> bool {
        self.flows.contains_key(&token)
    }

    pub fn token_of(&self, key: &K) -> Option<Token> {
        self.by_key.get(key).copied()
    }

    pub fn insert(&mut self, token: Token, key: K, flow: F) {
        if let Some((old, _)) = self.flows.insert(token, (key, flow)) {
            self.uncount(old.sandbox());
        }
        self.by_key.insert(key, token);
        *self.per_sandbox.entry(key.sandbox()).or_insert(0) += 1;
    }

    fn uncount(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_sandbox.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_sandbox.remove(&ip);
            }
        }
    }

    pub fn get_mut(&mut self, token: Token) -> Option<(K, &mut F)> {
        self.flows.get_mut(&token).map(|(k, f)| (*k, f))
    }

    /// Make room for one more flow of `sandbox` under `limits`: take out the flows idle longest
    /// (by `last_used`), of that sandbox while it is at its own cap, of any sandbox while the
    /// gateway is at its cap. The caller closes what comes back.
    pub fn evict_for(
        &mut self,
        sandbox: impl Into<IpAddr>,
        limits: FlowLimits,
        last_used: impl Fn(&F) -> std::time::Instant,
    ) -> Vec<F> {
        let sandbox = sandbox.into();
        let mut evicted = Vec::new();
        while let Some(own) = self.over(sandbox, limits) {
            let victim = self
                .flows
                .iter()
                .filter(|(_, (key, _))| !own || key.sandbox() == sandbox)
                .min_by_key(|(_, (_, flow))| last_used(flow))
                .map(|(token, _)| *token);
            match victim.and_then(|t| self.remove(t)) {
                Some((_, flow)) => evicted.push(flow),
                None => break,
            }
        }
        evicted
    }

    /// Take out one flow.
    pub fn remove(&mut self, token: Token) -> Option<(K, F)> {
        let (key, flow) = self.flows.remove(&token)?;
        self.by_key.remove(&key);
        self.uncount(key.sandbox());
        Some((key, flow))
    }

    pub fn flows_mut(&mut self) -> impl Iterator<Item = &mut F> {
        self.flows.values_mut().map(|(_, f)| f)
    }

    /// Take out every flow for which `done` holds, with its key.
    pub fn remove_where(&mut self, mut done: impl FnMut(&F) -> bool) -> Vec<(K, F)> {
        let tokens: Vec<Token> = self
            .flows
            .iter()
            .filter(|(_, (_, f))| done(f))
            .map(|(t, _)| *t)
            .collect();
        tokens.into_iter().filter_map(|t| self.remove(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Key = (Ipv4Addr, u16, Ipv4Addr, u16);

    fn key(sandbox: u8, port: u16) -> Key {
        (
            Ipv4Addr::new(10, 0, 0, sandbox),
            port,
            Ipv4Addr::new(127, 0, 0, 1),
            53,
        )
    }

    #[test]
    fn counts_flows_per_sandbox_and_checks_limits() {
        let mut t: FlowTable<Key, u32> = FlowTable::default();
        let limits = FlowLimits {
            per_sandbox: 2,
            per_gateway: 3,
        };
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(t.over(a, limits), None);
        t.insert(Token(1), key(2, 1), 0);
        t.insert(Token(2), key(2, 2), 0);
        assert_eq!(t.over(a, limits), Some(true), "a is at its own cap");
        assert_eq!(t.over(b, limits), None, "b is not");
        t.insert(Token(3), key(3, 1), 0);
        assert_eq!(t.over(b, limits), Some(false), "the gateway is full");
        assert_eq!(t.remove(Token(1)).map(|(k, _)| k), Some(key(2, 1)));
        assert_eq!((t.count_of(a), t.count_of(b)), (1, 1));
        assert_eq!(t.remove_where(|_| true).len(), 2);
        assert_eq!((t.count_of(a), t.count_of(b), t.len()), (0, 0, 0));
        assert_eq!(t.token_of(&key(3, 1)), None);
    }

    #[test]
    fn evicts_the_idlest_of_the_right_sandbox() {
        use std::time::{Duration, Instant};
        let mut t: FlowTable<Key, Instant> = FlowTable::default();
        let limits = FlowLimits {
            per_sandbox: 2,
            per_gateway: 3,
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.insert(Token(1), key(3, 1), at(0)); // b, idlest of all
        t.insert(Token(2), key(2, 1), at(1));
        t.insert(Token(3), key(2, 2), at(2));
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let gone = t.evict_for(a, limits, |f| *f);
        assert_eq!(
            gone,
            [at(1)],
            "a at its own cap loses its own idlest, not b's"
        );
        t.insert(Token(4), key(2, 3), at(3));
        let c = Ipv4Addr::new(10, 0, 0, 4);
        let gone = t.evict_for(c, limits, |f| *f);
        assert_eq!(
            gone,
            [at(0)],
            "the gateway at its cap loses the idlest of anyone's"
        );
        assert_eq!(t.evict_for(c, limits, |f| *f), Vec::<Instant>::new());
    }
}
