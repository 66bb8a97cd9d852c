//! The null driver: a sandbox gets its own namespace with loopback only; nothing to set up.

use super::{NetOptions, NetworkDriver, Options, check_keys};
use crate::datapath::fdb::DEFAULT_AGING_SECS;
use crate::error::{Error, Result};

pub struct Null;

impl NetworkDriver for Null {
    fn name(&self) -> &'static str {
        "null"
    }
    fn check_create(&self) -> Result<()> {
        Err(Error::invalid(
            "only one network of driver null may exist (it is none)",
        ))
    }
    fn validate(&self, options: &Options) -> Result<NetOptions> {
        check_keys(self.name(), options, &[])?;
        Ok(NetOptions::plain(DEFAULT_AGING_SECS))
    }
}
