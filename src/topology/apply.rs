//! Carrying out a topology plan through the daemon, and the record of what a file made
//! (`<state-dir>/topologies/NAME.json`, with the commands' logs beside it in `NAME/`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Topology;
use super::plan::{Action, Current, Record, plan_down, plan_up};
use crate::api::client::Client;
use crate::api::lab::LinkChange;
use crate::api::types::{NetworkCreate, PortAdd, Request, SandboxCreate};
use crate::error::{Context, Error, Result};

/// Read and check a topology file. Its ports' relative socket paths are made absolute against
/// the file's directory (the daemon may see another working directory, as for `port add`).
pub fn load(path: &Path) -> Result<Topology> {
    let text =
        std::fs::read_to_string(path).context(|| format!("read topology {}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("topology");
    let mut topo = Topology::parse(&text, stem)
        .map_err(|e| Error::invalid(format!("topology {}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for port in &mut topo.ports {
        let name = port.name.clone();
        if let Some(socket) = port.socket_mut() {
            let resolved = std::path::absolute(dir.join(&*socket)).map_err(|e| {
                Error::invalid(format!(
                    "topology {}: port {name}: socket {socket}: {e}",
                    path.display()
                ))
            })?;
            *socket = resolved.display().to_string();
        }
    }
    Ok(topo)
}

fn record_path(client: &Client, name: &str) -> PathBuf {
    client
        .dirs()
        .root()
        .join("topologies")
        .join(format!("{name}.json"))
}

fn logs_dir(client: &Client, name: &str) -> PathBuf {
    client.dirs().root().join("topologies").join(name)
}

fn read_record(client: &Client, name: &str) -> Result<Record> {
    let path = record_path(client, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!("corrupt topology record {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

fn write_record(client: &Client, name: &str, record: &Record) -> Result<()> {
    let path = record_path(client, name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| Error::invalid(format!("encode topology record: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).context(|| format!("write {}", path.display()))
}

fn current(client: &Client) -> Result<Current> {
    Ok(Current {
        networks: client.call(&Request::NetworkList)?,
        sandboxes: client.call(&Request::SandboxList)?,
        ports: client.call(&Request::PortList { network: None })?,
    })
}

/// `tapnet up FILE [--dry-run]`: print the plan, then (unless a dry run) carry it out.
pub fn up(client: &Client, path: &Path, dry_run: bool) -> Result<i32> {
    let topo = load(path)?;
    let name = topo.name().to_string();
    let record = read_record(client, &name)?;
    let (actions, next) = plan_up(&topo, &current(client)?, &record)
        .map_err(|e| Error::conflict(format!("topology {}: {e}", path.display())))?;
    if actions.is_empty() && policy_changes(client, &topo)?.is_empty() {
        outln!("{name}: up to date, nothing to do")?;
        return Ok(0);
    }
    for a in &actions {
        outln!("{}{a}", if dry_run { "would " } else { "" })?;
    }
    if dry_run {
        for (network, rules) in policy_changes(client, &topo)? {
            outln!("would set policy of {network}: {} rules", rules.len())?;
        }
        return Ok(0);
    }
    // Keep in the record what this file may have made, even if a step fails half way, so that
    // `down` can still remove it.
    let mut partial = record.clone();
    for n in &next.networks {
        if !partial.networks.contains(n) {
            partial.networks.push(n.clone());
        }
    }
    for s in &next.sandboxes {
        if !partial.sandboxes.contains(s) {
            partial.sandboxes.push(s.clone());
        }
    }
    for p in &next.ports {
        if !partial.ports.contains(p) {
            partial.ports.push(p.clone());
        }
    }
    write_record(client, &name, &partial)?;
    for a in &actions {
        run(client, &name, a).map_err(|e| Error::Remote(format!("{a}: {e}")))?;
    }
    write_record(client, &name, &next)?;
    for (network, rules) in policy_changes(client, &topo)? {
        outln!("set policy of {network}: {} rules", rules.len())?;
        set_policy(client, &network, rules)
            .map_err(|e| Error::Remote(format!("set policy of {network}: {e}")))?;
    }
    Ok(0)
}

/// The networks whose rules differ from the file's `[[policy]]` (networks the file lists no
/// rule for are left alone), with the rules the file wants. A network not made yet has none.
fn policy_changes(
    client: &Client,
    topo: &super::Topology,
) -> Result<Vec<(String, Vec<crate::control::policy::PolicyRule>)>> {
    let mut wanted: Vec<(String, Vec<crate::control::policy::PolicyRule>)> = Vec::new();
    for p in &topo.policies {
        match wanted.iter_mut().find(|(n, _)| *n == p.network) {
            Some((_, rules)) => rules.push(p.rule()),
            None => wanted.push((p.network.clone(), vec![p.rule()])),
        }
    }
    let mut changes = Vec::new();
    for (network, rules) in wanted {
        let now: Vec<_> = client
            .call::<crate::api::types::PolicyView>(&Request::PolicyList {
                network: network.clone(),
            })
            .map(|v| v.rules.into_iter().map(|r| r.rule).collect())
            .unwrap_or_default();
        if now != rules {
            changes.push((network, rules));
        }
    }
    Ok(changes)
}

/// Make `network`'s rules exactly `rules`: remove those it has, add the file's in order (and
/// forget admitted flows, which the old rules let in).
fn set_policy(
    client: &Client,
    network: &str,
    rules: Vec<crate::control::policy::PolicyRule>,
) -> Result<()> {
    let view: crate::api::types::PolicyView = client.call(&Request::PolicyList {
        network: network.to_string(),
    })?;
    for r in view.rules {
        client.call_value(&Request::PolicyRemove {
            network: network.to_string(),
            name: r.rule.name,
        })?;
    }
    let last = rules.len().saturating_sub(1);
    for (i, rule) in rules.into_iter().enumerate() {
        client.call_value(&Request::PolicyAdd {
            network: network.to_string(),
            rule,
            reset_flows: i == last,
        })?;
    }
    Ok(())
}

/// `tapnet down FILE [--dry-run]`: remove what `up` of this file made.
pub fn down(client: &Client, path: &Path, dry_run: bool) -> Result<i32> {
    let topo = load(path)?;
    let name = topo.name().to_string();
    let record = read_record(client, &name)?;
    let actions = plan_down(&current(client)?, &record);
    for a in &actions {
        outln!("{}{a}", if dry_run { "would " } else { "" })?;
    }
    if dry_run {
        return Ok(0);
    }
    for a in &actions {
        run(client, &name, a).map_err(|e| Error::Remote(format!("{a}: {e}")))?;
    }
    let record_file = record_path(client, &name);
    if record_file.exists() {
        std::fs::remove_file(&record_file)
            .context(|| format!("remove {}", record_file.display()))?;
    }
    let logs = logs_dir(client, &name);
    if logs.exists() {
        std::fs::remove_dir_all(&logs).context(|| format!("remove {}", logs.display()))?;
    }
    // The topologies dir goes too once empty (ignore "not empty": other files' records).
    let _ = std::fs::remove_dir(client.dirs().root().join("topologies"));
    if actions.is_empty() {
        outln!("{name}: nothing to remove")?;
    }
    Ok(0)
}

fn run(client: &Client, topo: &str, action: &Action) -> Result<()> {
    match action {
        Action::RemoveSandbox(name) => {
            client.call_value(&Request::SandboxRemove {
                name: name.clone(),
                force: true,
            })?;
        }
        Action::RemoveNetwork(name) => {
            client.call_value(&Request::NetworkRemove { name: name.clone() })?;
        }
        Action::CreateNetwork(n) => {
            client.call_value(&Request::NetworkCreate(NetworkCreate {
                name: n.name.clone(),
                driver: Some(n.driver.clone().unwrap_or_else(|| "bridge".into())),
                subnet: n.subnet.clone(),
                gateway: n.gateway.clone(),
                ip_range: n.ip_range.clone(),
                internal: n.internal,
                mtu: n.mtu,
                vni: n.vni,
                offload: n.offload,
                options: n.options.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                ipv6: n.wants_ipv6(),
                no_ipv4: !n.wants_ipv4(),
                subnet6: n.subnet6.clone(),
                gateway6: n.gateway6.clone(),
            }))?;
        }
        Action::CreateSandbox(s) => {
            let first = s.networks.first().cloned().unwrap_or_default();
            client.call_value(&Request::SandboxCreate(SandboxCreate {
                name: s.name.clone(),
                networks: vec![first.clone()],
                ip: s.ip.get(&first).cloned(),
                hostname: s.hostname.clone(),
                publish: s.publish.clone(),
                ip6: s.ip6.get(&first).cloned(),
            }))?;
            for n in s.networks.iter().skip(1) {
                client.call_value(&Request::NetworkConnect {
                    network: n.clone(),
                    sandbox: s.name.clone(),
                    ip: s.ip.get(n).cloned(),
                    aliases: Vec::new(),
                    ip6: s.ip6.get(n).cloned(),
                })?;
            }
        }
        Action::RemovePort(name) => {
            client.call_value(&Request::PortRemove { name: name.clone() })?;
        }
        Action::CreatePort(p) => {
            client.call_value(&Request::PortAdd(PortAdd {
                network: p.network.clone(),
                name: p.name.clone(),
                qemu_socket: p.qemu_socket.clone(),
                vhost_user: p.vhost_user.clone(),
                iface: p.iface.clone(),
                mac: p.mac.clone(),
                ip: p.ip.clone(),
                ip6: p.ip6.clone(),
                publish: p.publish.clone(),
            }))?;
        }
        Action::SetLink {
            sandbox,
            network,
            impairment: i,
        } => {
            client.call_value(&Request::LinkSet(LinkChange {
                sandbox: sandbox.clone(),
                network: network.clone(),
                delay_us: Some(i.delay_us),
                jitter_us: Some(i.jitter_us),
                loss_ppm: Some(i.loss_ppm),
                duplicate_ppm: Some(i.duplicate_ppm),
                corrupt_ppm: Some(i.corrupt_ppm),
                reorder_ppm: Some(i.reorder_ppm),
                rate_bps: Some(i.rate_bps),
                down: Some(i.down),
                seed: i.seed,
                both: Some(i.both),
            }))?;
        }
        Action::Block {
            a,
            b,
            network,
            block,
        } => {
            client.call_value(&Request::LinkBlock {
                a: a.clone(),
                b: b.clone(),
                network: Some(network.clone()),
                block: *block,
            })?;
        }
        Action::StartCommand { sandbox, command } => start_command(client, topo, sandbox, command)?,
    }
    Ok(())
}

/// Start `sh -c COMMAND` in the sandbox through `tapnet exec`, detached (own session), with its
/// output in `topologies/TOPO/SANDBOX.log`. Removing the sandbox (`down`) kills it.
fn start_command(client: &Client, topo: &str, sandbox: &str, command: &str) -> Result<()> {
    let dir = logs_dir(client, topo);
    std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
    let log_path = dir.join(format!("{sandbox}.log"));
    let log = File::create(&log_path).context(|| format!("create {}", log_path.display()))?;
    let err = log
        .try_clone()
        .context(|| format!("open {}", log_path.display()))?;
    let exe = std::env::current_exe().context(|| "find the tapnet executable".into())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir")
        .arg(client.dirs().root())
        .args(["exec", sandbox, "--", "sh", "-c", command])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the command from our terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()
        .context(|| format!("start the command of sandbox {sandbox}"))?;
    Ok(())
}
