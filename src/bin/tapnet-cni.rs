//! `tapnet-cni`: a CNI plugin (spec 1.0/1.1) that asks the tapnet daemon for the work. Runtimes
//! run it with the `CNI_*` environment and the network configuration on stdin; it prints the
//! result (or CNI's error JSON, exit status 1). With arguments it is the `tapnet` command line,
//! which is how it starts a daemon when none runs (`tapnet-cni --state-dir DIR daemon`).

use std::collections::HashMap;
use std::io::Read;

use tapnet::api::client::Client;
use tapnet::cni::{self, Attachment, Call, CniError};
use tapnet::paths::StateDir;

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(tapnet::cli::main());
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = match read {
        Ok(_) => run(&env, &stdin),
        Err(e) => (
            CniError::new(cni::DECODE_FAILED, format!("read stdin: {e}")).to_json("1.0.0"),
            1,
        ),
    };
    // DEL, CHECK, STATUS and GC say nothing on success (CNI spec); `null` is not nothing.
    if !out.is_null() {
        println!("{out}");
    }
    std::process::exit(code);
}

fn run(env: &HashMap<String, String>, stdin: &[u8]) -> (serde_json::Value, i32) {
    let (call, conf) = match cni::parse(env, stdin) {
        Ok(c) => c,
        Err(e) => return (e.to_json("1.0.0"), 1),
    };
    let version = if conf.cni_version.is_empty() {
        "1.0.0".to_string()
    } else {
        conf.cni_version.clone()
    };
    if call == Call::Version {
        return (cni::version_result(), 0);
    }
    let Some(request) = cni::request(&call, &conf) else {
        return (serde_json::Value::Null, 0);
    };
    let dirs = match &conf.state_dir {
        Some(dir) => StateDir::new(dir),
        None => match StateDir::default_root() {
            Ok(root) => StateDir::new(root),
            Err(e) => {
                return (
                    CniError::new(cni::INVALID_CONFIG, format!("state dir: {e}")).to_json(&version),
                    1,
                );
            }
        },
    };
    // STATUS only asks whether the daemon is there; everything else may start it.
    let client = Client::new(dirs, call != Call::Status);
    match client.call_value(&request) {
        Ok(value) => match call {
            Call::Add(_) => match serde_json::from_value::<Attachment>(value) {
                Ok(a) => (
                    cni::chain_result(conf.prev_result.as_ref(), cni::add_result(&version, &a)),
                    0,
                ),
                Err(e) => (
                    CniError::new(cni::DAEMON_ERROR, format!("daemon answer: {e}"))
                        .to_json(&version),
                    1,
                ),
            },
            // CHECK: the daemon found the attachment and its link; the chain's result must
            // say the same of it.
            Call::Check(_) => match (
                &conf.prev_result,
                serde_json::from_value::<Attachment>(value),
            ) {
                (Some(prev), Ok(a)) => match cni::check_prev_result(prev, &a) {
                    Ok(()) => (serde_json::Value::Null, 0),
                    Err(e) => (e.to_json(&version), 1),
                },
                _ => (serde_json::Value::Null, 0),
            },
            _ => (serde_json::Value::Null, 0),
        },
        Err(e) => {
            let msg = e.to_string();
            let code = match &call {
                Call::Status => cni::PLUGIN_NOT_AVAILABLE,
                // CNI_IFNAME names an interface the namespace already has.
                Call::Add(ep) if msg == cni::ifname_taken(&ep.ifname, &ep.netns) => {
                    cni::INVALID_ENV
                }
                _ => cni::DAEMON_ERROR,
            };
            (CniError::new(code, msg).to_json(&version), 1)
        }
    }
}
