//! The fd keeper: a small process per state dir that holds a second reference to every sandbox
//! endpoint's TAP queue fds, so that they do not die with the daemon. A `kill -9` of the daemon
//! then closes only extra references: no `tun_detach`, the TAPs and their addresses and routes
//! stay in the sandboxes, and TCP connections between sandboxes carry on. The restarted daemon
//! takes the fds back (SCM_RIGHTS) and re-attaches them to its switch as they are, as systemd's
//! file-descriptor store hands services their fds.
//!
//! - `proto`: the messages (one SOCK_SEQPACKET datagram each) and a parser that never panics.
//! - `process`: the keeper itself, forked by the daemon before it starts any thread.
//! - `client`: the daemon's side: PUT when an endpoint is wired, DROP when it goes, TAKE-ALL
//!   on start, QUIT on a clean stop.

pub mod client;
pub(crate) mod process;
pub mod proto;

/// The keeper's command name, as /proc/PID/comm shows it.
pub const KEEPER_COMM: &str = "tapnet-fdkeeper";
