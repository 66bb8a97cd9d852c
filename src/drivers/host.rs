//! The host driver: a sandbox shares the daemon's network namespace; nothing to set up.

use super::{NetOptions, NetworkDriver, Options, check_keys};
use crate::datapath::fdb::DEFAULT_AGING_SECS;
use crate::error::{Error, Result};

pub struct Host;

impl NetworkDriver for Host {
    fn name(&self) -> &'static str {
        "host"
    }
    fn check_create(&self) -> Result<()> {
        Err(Error::invalid(
            "only one network of driver host may exist (it is host)",
        ))
    }
    fn validate(&self, options: &Options) -> Result<NetOptions> {
        check_keys(self.name(), options, &[])?;
        Ok(NetOptions::plain(DEFAULT_AGING_SECS))
    }
    fn shares_host(&self) -> bool {
        true
    }
}
