//! `tapnet demo`: placeholder replaced below.
use crate::error::Result;
pub fn run() -> Result<i32> {
    Ok(0)
}
