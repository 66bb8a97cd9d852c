//! What the datapath knows of a network: its MAC table and MTU. Membership lives in the workers.

use std::sync::atomic::{AtomicU32, Ordering};

use super::fdb::Fdb;
use super::port::NetId;

pub struct NetworkDp {
    pub id: NetId,
    pub name: String,
    pub fdb: Fdb,
    mtu: AtomicU32,
}

impl NetworkDp {
    pub fn new(id: NetId, name: String, mtu: u32, aging_secs: u32) -> Self {
        NetworkDp {
            id,
            name,
            fdb: Fdb::new(aging_secs),
            mtu: AtomicU32::new(mtu),
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu.load(Ordering::Relaxed) as usize
    }
}
