//! Network plugins both ways: libnetwork's remote driver protocol over HTTP on unix sockets.
//! `docker` serves it to dockerd (tapnet as a Docker network plugin).

pub mod client;
pub mod docker;
pub mod http;
pub mod protocol;
