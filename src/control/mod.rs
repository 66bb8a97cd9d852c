//! The control plane: the CNM model, IPAM, the state file, and the controller that turns API
//! requests into namespace setup and datapath commands.

pub mod controller;
pub mod etc_files;
pub mod ipam;
pub mod ipam6;
pub mod journal;
pub mod links;
pub mod model;
pub mod nofollow;
pub mod policy;
pub mod ports;
pub mod request_log;
pub mod sandbox_list;
pub mod store;
pub mod validate;
pub mod views;
pub mod wiring;
