//! Network plugins both ways: libnetwork's remote driver protocol over HTTP on unix sockets.
//! `docker` serves it to dockerd (tapnet as a Docker network plugin).

pub(crate) mod client;
pub(crate) mod docker;
pub mod http;
pub mod protocol;
