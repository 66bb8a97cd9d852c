//! The host driver: a sandbox shares the daemon's network namespace; nothing to set up.

use super::{NetworkDriver, Options, check_keys};
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
    fn check_options(&self, options: &Options) -> Result<()> {
        check_keys(self.name(), options, &[])
    }
    fn shares_host(&self) -> bool {
        true
    }
}
