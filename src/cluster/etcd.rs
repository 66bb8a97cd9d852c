//! The etcd client of the cluster store: a thread with a tokio runtime of its own (the rest of
//! the daemon is threads and mio), bridged to the controller by channels.
//!
//! The thread connects, grants the daemon's lease and keeps it alive (every third of its TTL),
//! reads everything under the prefix (sent as one [`Event::Snapshot`]) and watches from the next
//! revision. When any of that fails (the store went away) it retries every second; on success it
//! grants a new lease if the old one is gone, puts this daemon's endpoints again, and sends a
//! new snapshot: a daemon that lost the store catches up, and meanwhile the controller keeps
//! what it knew (the datapath never waits on the store).

use std::collections::BTreeMap;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};

use super::{
    Claim, EndpointRecord, Event, PREFIX, Request, StoreOptions, claim_keys, endpoint_key,
    event_of, network_key, vni_key,
};
use crate::error::{Error, Result};

const RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Outcome<T> = std::result::Result<T, etcd_client::Error>;

pub(super) fn start(options: &StoreOptions) -> Result<(Sender<Request>, Receiver<Event>)> {
    let (requests, from_controller) = crossbeam_channel::unbounded::<Request>();
    let (events, to_controller) = crossbeam_channel::unbounded();
    let (started, wait) = crossbeam_channel::bounded::<std::result::Result<(), String>>(1);
    let options = options.clone();
    std::thread::Builder::new()
        .name("cluster-store".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = started.send(Err(format!("start its runtime: {e}")));
                    return;
                }
            };
            // Requests come on a crossbeam channel (the controller has no runtime): a plain
            // thread forwards them into the runtime's channel.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = std::thread::Builder::new()
                .name("cluster-requests".into())
                .spawn(move || {
                    for r in from_controller {
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = forward {
                let _ = started.send(Err(format!("start its request thread: {e}")));
                return;
            }
            runtime.block_on(run(options, rx, events, started));
        })
        .map_err(|e| Error::invalid(format!("cluster store: start its thread: {e}")))?;
    match wait.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(5)) {
        Ok(Ok(())) => Ok((requests, to_controller)),
        Ok(Err(e)) => Err(Error::invalid(format!("cluster store: {e}"))),
        Err(_) => Err(Error::invalid("cluster store: no answer from the store")),
    }
}

/// The session state kept across reconnections.
struct Session {
    options: StoreOptions,
    lease: Option<i64>,
    /// This daemon's endpoints (key -> value), put again after a reconnection.
    own: BTreeMap<String, Vec<u8>>,
}

async fn run(
    options: StoreOptions,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
    events: Sender<Event>,
    started: Sender<std::result::Result<(), String>>,
) {
    let mut s = Session {
        options,
        lease: None,
        own: BTreeMap::new(),
    };
    let mut started = Some(started);
    loop {
        let outcome = session(&mut s, &mut requests, &events, &mut started).await;
        match outcome {
            Ok(()) => return, // the controller is gone
            Err(e) => {
                if let Some(st) = started.take() {
                    let _ = st.send(Err(format!(
                        "cannot reach {}: {e}",
                        s.options.endpoints.join(",")
                    )));
                    return;
                }
                eprintln!(
                    "tapnet: cluster store lost ({e}); forwarding goes on with what is known, retrying"
                );
            }
        }
        // Requests that come while the store is away fail at once rather than wait.
        let deadline = tokio::time::sleep(RETRY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = requests.recv() => match r {
                    Some(r) => offline(&mut s, r),
                    None => return,
                },
            }
        }
    }
}

fn offline(s: &mut Session, r: Request) {
    let away = || Error::invalid("cluster store unreachable: try again when it is back");
    match r {
        Request::PutNetwork(_, reply) => {
            let _ = reply.send(Err(away()));
        }
        Request::Claim(_, reply) => {
            let _ = reply.send(Err(away()));
        }
        Request::Publish(rec) => {
            own(s, &rec);
        }
        Request::Release { network, ip } => {
            disown(s, &network, ip);
        }
        Request::Revoke(reply) => {
            // Nothing to revoke from here; the lease ends by itself.
            s.own.clear();
            let _ = reply.send(());
        }
        Request::DeleteNetwork(_) => {}
    }
}

/// Keep an endpoint's keys (its IPv6 address's claim too) for the next connection; returns
/// them with the value.
fn own(s: &mut Session, rec: &EndpointRecord) -> (String, Option<String>, Vec<u8>) {
    let (k4, k6) = claim_keys(rec);
    let value = serde_json::to_vec(rec).unwrap_or_default();
    s.own.insert(k4.clone(), value.clone());
    if let Some(k6) = &k6 {
        s.own.insert(k6.clone(), value.clone());
    }
    (k4, k6, value)
}

/// Forget an endpoint's keys: the endpoint key, and its IPv6 claim, found from the record.
fn disown(s: &mut Session, network: &str, ip: std::net::IpAddr) -> Vec<String> {
    let k4 = endpoint_key(network, ip);
    let k6 = s
        .own
        .remove(&k4)
        .and_then(|v| serde_json::from_slice::<EndpointRecord>(&v).ok())
        .and_then(|rec| claim_keys(&rec).1);
    if let Some(k6) = &k6 {
        s.own.remove(k6);
    }
    std::iter::once(k4).chain(k6).collect()
}

/// One connection's life: Ok when the controller hung up, Err when the store failed.
async fn session(
    s: &mut Session,
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<Request>,
    events: &Sender<Event>,
    started: &mut Option<Sender<std::result::Result<(), String>>>,
) -> Outcome<()> {
    let connect = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let mut client = Client::connect(&s.options.endpoints, Some(connect)).await?;
    let ttl = s.options.lease.as_secs() as i64;
    // The old lease survives a store restart shorter than its TTL: keep it if it does.
    let lease = match s.lease {
        Some(id) if client.lease_time_to_live(id, None).await?.ttl() > 0 => id,
        _ => client.lease_grant(ttl, None).await?.id(),
    };
    s.lease = Some(lease);
    let (mut keeper, mut kept) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    for (k, v) in &s.own {
        client
            .put(
                k.clone(),
                v.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
    }
    let all = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = all.header().map(|h| h.revision()).unwrap_or(0);
    let mut networks = Vec::new();
    let mut endpoints = Vec::new();
    for kv in all.kvs() {
        match kv
            .key_str()
            .ok()
            .and_then(|k| event_of(k, kv.value(), false))
        {
            Some(Event::Network(n)) => networks.push(n),
            Some(Event::Endpoint(e)) => endpoints.push(e),
            _ => {}
        }
    }
    let mut watch = client
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    if let Some(st) = started.take() {
        let _ = st.send(Ok(()));
    }
    if events
        .send(Event::Snapshot {
            networks,
            endpoints,
        })
        .is_err()
    {
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 3).max(500)));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                keeper.keep_alive().await?;
            }
            k = kept.message() => {
                match k? {
                    // A lease that ended (the store was away too long): start over.
                    Some(r) if r.ttl() <= 0 => {
                        s.lease = None;
                        return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into()));
                    }
                    Some(_) => {}
                    None => return Err(etcd_client::Error::LeaseKeepAliveError("keep-alive stream ended".into())),
                }
            }
            w = watch.message() => {
                let Some(w) = w? else {
                    return Err(etcd_client::Error::WatchError("watch ended".into()));
                };
                if w.canceled() {
                    return Err(etcd_client::Error::WatchError("watch canceled".into()));
                }
                for e in w.events() {
                    let Some(kv) = e.kv() else { continue };
                    let deleted = e.event_type() == EventType::Delete;
                    if let Some(ev) = kv.key_str().ok().and_then(|k| event_of(k, kv.value(), deleted))
                        && events.send(ev).is_err()
                    {
                        return Ok(());
                    }
                }
            }
            r = requests.recv() => {
                let Some(r) = r else { return Ok(()) };
                serve(s, &mut client, lease, r).await?;
            }
        }
    }
}

async fn serve(s: &mut Session, client: &mut Client, lease: i64, r: Request) -> Outcome<()> {
    match r {
        Request::PutNetwork(net, reply) => {
            let key = network_key(&net.name);
            let value = serde_json::to_vec(&net).unwrap_or_default();
            // The name and the VNI, both absent and both written, or nothing.
            let vni = net.vni.map(vni_key);
            let mut when = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
            let mut then = vec![TxnOp::put(key.clone(), value, None)];
            if let Some(vk) = &vni {
                when.push(Compare::create_revision(vk.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::put(vk.clone(), net.name.clone(), None));
            }
            let txn = Txn::new().when(when).and_then(then);
            let answer = match client.txn(txn).await {
                Ok(t) if t.succeeded() => Ok(()),
                Ok(_) => {
                    // The VNI is another network's: one clear error for the loser of a race.
                    let holder = match &vni {
                        Some(vk) => client
                            .get(vk.clone(), None)
                            .await?
                            .kvs()
                            .first()
                            .and_then(|kv| kv.value_str().ok().map(str::to_string)),
                        None => None,
                    };
                    if let (Some(holder), Some(n)) = (holder, net.vni)
                        && holder != net.name
                    {
                        let _ = reply.send(Err(Error::conflict(format!(
                            "VNI {n} is taken by network {holder} in the cluster store"
                        ))));
                        return Ok(());
                    }
                    // Another host made it first: fine if it is the same network.
                    let theirs = client.get(key.clone(), None).await?;
                    let same = theirs
                        .kvs()
                        .first()
                        .and_then(|kv| {
                            serde_json::from_slice::<crate::control::model::Network>(kv.value())
                                .ok()
                        })
                        .is_some_and(|n| n.vni == net.vni && n.subnet == net.subnet);
                    if same {
                        Ok(())
                    } else {
                        Err(Error::conflict(format!(
                            "network {} exists in the cluster store with another VNI or subnet",
                            net.name
                        )))
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(Error::invalid(format!(
                        "cluster store: create network {}: {e}",
                        net.name
                    ))));
                    return Err(e);
                }
            };
            let _ = reply.send(answer);
        }
        Request::DeleteNetwork(name) => {
            let key = network_key(&name);
            let vni = client
                .get(key.clone(), None)
                .await?
                .kvs()
                .first()
                .and_then(|kv| {
                    serde_json::from_slice::<crate::control::model::Network>(kv.value()).ok()
                })
                .and_then(|n| n.vni);
            client.delete(key, None).await?;
            // The VNI's key, if it is still this network's.
            if let Some(vk) = vni.map(vni_key) {
                let txn = Txn::new()
                    .when([Compare::value(vk.clone(), CompareOp::Equal, name.clone())])
                    .and_then([TxnOp::delete(vk, None)]);
                client.txn(txn).await?;
            }
        }
        Request::Claim(rec, reply) => {
            let (k4, k6) = claim_keys(&rec);
            let value = serde_json::to_vec(&rec).unwrap_or_default();
            let keys: Vec<String> = std::iter::once(k4).chain(k6).collect();
            // Every key or none: a dual-stack endpoint holds both of its addresses.
            let lease = Some(PutOptions::new().with_lease(lease));
            let txn = Txn::new()
                .when(
                    keys.iter()
                        .map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0))
                        .collect::<Vec<_>>(),
                )
                .and_then(
                    keys.iter()
                        .map(|k| TxnOp::put(k.clone(), value.clone(), lease.clone()))
                        .collect::<Vec<_>>(),
                )
                .or_else(
                    keys.iter()
                        .map(|k| TxnOp::get(k.clone(), None))
                        .collect::<Vec<_>>(),
                );
            match client.txn(txn).await {
                Ok(t) if t.succeeded() => {
                    own(s, &rec);
                    let _ = reply.send(Ok(Claim::Won));
                }
                Ok(t) => {
                    // Which of them another host holds, in the order asked.
                    let held: Vec<bool> = t
                        .op_responses()
                        .into_iter()
                        .map(|r| match r {
                            etcd_client::TxnOpResponse::Get(g) => !g.kvs().is_empty(),
                            _ => false,
                        })
                        .collect();
                    let _ = reply.send(Ok(Claim::Taken {
                        ip: held.first().copied().unwrap_or(true),
                        ipv6: held.get(1).copied().unwrap_or(false),
                    }));
                }
                Err(e) => {
                    let _ = reply.send(Err(Error::invalid(format!(
                        "cluster store: claim {}{} on network {}: {e}",
                        rec.ip,
                        rec.ipv6.map(|ip| format!(" and {ip}")).unwrap_or_default(),
                        rec.network
                    ))));
                    return Err(e);
                }
            }
        }
        Request::Publish(rec) => {
            let (k4, k6, value) = own(s, &rec);
            for key in std::iter::once(k4).chain(k6) {
                client
                    .put(
                        key,
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await?;
            }
        }
        Request::Release { network, ip } => {
            for key in disown(s, &network, ip) {
                client.delete(key, None).await?;
            }
        }
        Request::Revoke(reply) => {
            // Every key under the lease goes with it, in one step.
            let revoked = client.lease_revoke(lease).await;
            s.lease = None;
            s.own.clear();
            let _ = reply.send(());
            revoked?;
        }
    }
    Ok(())
}
