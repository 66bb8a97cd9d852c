//! What the datapath knows of a network: its MAC table, MTU and policy's shared state (the
//! connection table, drop counters, the table last pushed). Membership lives in the workers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::conntrack::ConnTable;
use super::fdb::Fdb;
use super::policy::{PolicyCounters, PolicyTable};
use super::port::NetId;

pub struct NetworkDp {
    pub id: NetId,
    pub name: String,
    pub fdb: Fdb,
    mtu: AtomicU32,
    /// The policy the workers hold (their copies come by `Command::SetPolicy`): for trace,
    /// stats and the next push, which keeps its rules' counters.
    pub policy: Mutex<Option<Arc<PolicyTable>>>,
    /// Made, at its bound, when the policy first tracks flows.
    pub conns: OnceLock<ConnTable>,
    pub policy_drops: PolicyCounters,
}

impl NetworkDp {
    pub fn new(id: NetId, name: String, mtu: u32, aging_secs: u32) -> Self {
        NetworkDp {
            id,
            name,
            fdb: Fdb::new(aging_secs),
            mtu: AtomicU32::new(mtu),
            policy: Mutex::new(None),
            conns: OnceLock::new(),
            policy_drops: PolicyCounters::default(),
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu.load(Ordering::Relaxed) as usize
    }
}

impl NetworkDp {
    /// The policy last pushed, if any.
    pub fn policy(&self) -> Option<Arc<PolicyTable>> {
        crate::guard::lock_or_stop(&self.policy, "a network's policy").clone()
    }
}
