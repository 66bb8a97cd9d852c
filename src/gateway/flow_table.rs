//! The bookkeeping every NAT table shares: flows found by their poll token (events from host
//! sockets) or by their key (frames from sandboxes), and removed by a condition.

use std::collections::HashMap;
use std::hash::Hash;

use mio::Token;

pub struct FlowTable<K, F> {
    flows: HashMap<Token, (K, F)>,
    by_key: HashMap<K, Token>,
}

impl<K, F> Default for FlowTable<K, F> {
    fn default() -> Self {
        FlowTable {
            flows: HashMap::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash, F> FlowTable<K, F> {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

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
        self.flows.insert(token, (key, flow));
        self.by_key.insert(key, token);
    }

    pub fn get_mut(&mut self, token: Token) -> Option<(K, &mut F)> {
        self.flows.get_mut(&token).map(|(k, f)| (*k, f))
    }

    pub fn flows_mut(&mut self) -> impl Iterator<Item = &mut F> {
        self.flows.values_mut().map(|(_, f)| f)
    }

    /// Take out every flow for which `done` holds.
    pub fn remove_where(&mut self, mut done: impl FnMut(&F) -> bool) -> Vec<F> {
        let tokens: Vec<Token> = self
            .flows
            .iter()
            .filter(|(_, (_, f))| done(f))
            .map(|(t, _)| *t)
            .collect();
        tokens
            .into_iter()
            .filter_map(|t| self.flows.remove(&t))
            .map(|(key, flow)| {
                self.by_key.remove(&key);
                flow
            })
            .collect()
    }
}
