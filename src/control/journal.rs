//! The state journal: what changed in the model since the last snapshot, one line per commit.
//!
//! Rewriting the whole state file at every commit made each create cost more the more
//! sandboxes there were (459 KB serialised and fsynced at 1,000). A commit now appends one
//! line holding only the entities it changed: a `put` carries an entity whole (a network, a
//! sandbox, a VM port, a CNI attachment, a Docker plugin), a `del` its key, `meta` the few
//! state-wide fields. Replaying the lines over the snapshot gives the state back. Each line is
//! a whole commit (`{"generation":G,"ops":[...]}`): a line cut short by a crash is dropped whole, so
//! a commit is in the state entirely or not at all. `generation` ties a journal to the snapshot it
//! follows; see `store.rs` for compaction.
//!
//! This module is pure: it finds the changes between two states, applies them, and reads and
//! writes lines. The store does the files.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::wire::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::model::{CniAttachment, DockerPlugin, Network, Sandbox, State, VmPort};
use super::request_log::KEPT;
use super::sandbox_list::SandboxList;

/// An entity's key: its name, or for a CNI attachment (container, interface, network).
type Key<'a> = [&'a str; 3];

/// The collections of `State` that the journal tracks entity by entity.
trait Entity: Clone + PartialEq + 'static {
    const KIND: Kind;
    fn key(&self) -> Key<'_>;
    fn list(state: &State) -> &[Self];
    fn put(&self) -> Put<'_>;
    /// Whether an entity is unchanged: its value, compared (a shared sandbox: its pointer).
    fn same(&self, other: &Self) -> bool {
        self == other
    }
    /// Whether the two are one (a shared sandbox), and so alike without comparing keys.
    fn shared(&self, _other: &Self) -> bool {
        false
    }
}

/// The entities kept in a plain list (the sandboxes' keeps indexes, `sandbox_list.rs`).
trait Listed: Entity {
    fn list_mut(state: &mut State) -> &mut Vec<Self>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Network,
    Sandbox,
    VmPort,
    Cni,
    DockerPlugin,
}

/// An entity, whole: borrowed when written, owned when read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Put<'a> {
    Network(Cow<'a, Network>),
    Sandbox(Cow<'a, Sandbox>),
    VmPort(Cow<'a, VmPort>),
    Cni(Cow<'a, CniAttachment>),
    DockerPlugin(Cow<'a, DockerPlugin>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "a commit makes a few, briefly; boxing would allocate for every put"
)]
pub enum Op<'a> {
    Put(Put<'a>),
    Del {
        kind: Kind,
        key: [Cow<'a, str>; 3],
    },
    /// Request ids committed since (appended, the oldest dropped past `request_log::KEPT`).
    Requests(Vec<Cow<'a, str>>),
    /// The committed request ids, all of them (when they are not the saved ones plus some).
    AllRequests(Cow<'a, VecDeque<String>>),
    Ula(Option<Ipv6Net>),
}

/// One commit: a journal line, read back.
#[derive(Debug, Deserialize)]
pub struct Batch<'a> {
    pub generation: u64,
    pub ops: Vec<Op<'a>>,
}

macro_rules! entity {
    ($ty:ty, $kind:ident, $field:ident, |$e:ident| $key:expr) => {
        impl Entity for $ty {
            const KIND: Kind = Kind::$kind;
            fn key(&self) -> Key<'_> {
                let $e = self;
                $key
            }
            fn list(state: &State) -> &[Self] {
                &state.$field
            }
            fn put(&self) -> Put<'_> {
                Put::$kind(Cow::Borrowed(self))
            }
        }
        impl Listed for $ty {
            fn list_mut(state: &mut State) -> &mut Vec<Self> {
                &mut state.$field
            }
        }
    };
}

entity!(Network, Network, networks, |n| [&n.name, "", ""]);
impl Entity for Arc<Sandbox> {
    const KIND: Kind = Kind::Sandbox;
    fn key(&self) -> Key<'_> {
        [&self.name, "", ""]
    }
    fn list(state: &State) -> &[Self] {
        &state.sandboxes
    }
    fn put(&self) -> Put<'_> {
        Put::Sandbox(Cow::Borrowed(&**self))
    }
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || self == other
    }
    fn shared(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}
entity!(VmPort, VmPort, vm_ports, |p| [&p.name, "", ""]);
entity!(CniAttachment, Cni, cni, |a| [
    &a.container_id,
    &a.ifname,
    &a.network
]);
entity!(DockerPlugin, DockerPlugin, docker_plugins, |p| [
    &p.name, "", ""
]);

/// What turns `saved` into `now`, or `None` when only a snapshot says it exactly. Entities
/// are compared with `==` in the order both lists keep them: creates append, removals keep the
/// rest in order, so a commit costs a walk of comparisons, not a serialisation of everything.
/// A replayed put replaces in place or appends, so an entity inserted before others, or
/// moved, cannot be said as changes (nothing in the model does that today).
pub fn changes<'a>(saved: &State, now: &'a State) -> Option<Vec<Op<'a>>> {
    let mut ops = Vec::new();
    diff::<Network>(saved, now, &mut ops)?;
    diff::<Arc<Sandbox>>(saved, now, &mut ops)?;
    diff::<VmPort>(saved, now, &mut ops)?;
    diff::<CniAttachment>(saved, now, &mut ops)?;
    diff::<DockerPlugin>(saved, now, &mut ops)?;
    if saved.committed_requests != now.committed_requests {
        ops.push(requests(&saved.committed_requests, &now.committed_requests));
    }
    if saved.ula != now.ula {
        ops.push(Op::Ula(now.ula));
    }
    Some(ops)
}

/// The ids `now` has after the newest of `saved`, if appending them (and dropping the oldest)
/// makes `now`; else all of them. A commit then writes its own id, not all 256.
fn requests<'a>(saved: &VecDeque<String>, now: &'a VecDeque<String>) -> Op<'a> {
    let start = match saved.back() {
        None => 0,
        Some(last) => now.iter().rposition(|id| id == last).map_or(0, |k| k + 1),
    };
    let added = now.range(start..);
    let total = saved.len() + added.len();
    let replayed = saved
        .iter()
        .chain(added.clone())
        .skip(total.saturating_sub(KEPT));
    if replayed.eq(now.iter()) {
        Op::Requests(added.map(|id| Cow::Borrowed(id.as_str())).collect())
    } else {
        Op::AllRequests(Cow::Borrowed(now))
    }
}

fn diff<'a, E: Entity>(saved: &State, now: &'a State, ops: &mut Vec<Op<'a>>) -> Option<()> {
    let (old, new) = (E::list(saved), E::list(now));
    // Keys of the new list, made only when the two lists stop lining up.
    let mut new_keys: Option<HashSet<Key<'a>>> = None;
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.shared(n) => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.key() == n.key() => {
                if !o.same(n) {
                    ops.push(Op::Put(n.put()));
                }
                i += 1;
                j += 1;
            }
            (Some(o), _) => {
                let keys = new_keys.get_or_insert_with(|| new.iter().map(E::key).collect());
                if keys.contains(&o.key()) {
                    // It stays, but something new or moved comes before it.
                    return None;
                }
                ops.push(del::<E>(o.key()));
                i += 1;
            }
            (None, Some(n)) => {
                ops.push(Op::Put(n.put()));
                j += 1;
            }
            (None, None) => return Some(()),
        }
    }
}

fn del<E: Entity>(key: Key<'_>) -> Op<'static> {
    Op::Del {
        kind: E::KIND,
        key: key.map(|k| Cow::Owned(k.to_string())),
    }
}

/// What a commit changed, as far as the per-network tables (names, leases, policy) care.
#[derive(Debug, Default)]
pub struct Touched {
    /// The networks whose sandboxes or VM ports changed (before or after).
    pub networks: HashSet<String>,
    /// The sandboxes the commit put or deleted, each with its version before it (`None`: new),
    /// when nothing else of the networks changed (no VM port): their name and lease entries
    /// can then be edited one sandbox at a time instead of the tables made again.
    pub sandboxes: Option<Vec<(String, Option<Sandbox>)>>,
}

/// What `ops` change, read against `saved` (the state before them); `None` for a change that
/// may concern any network (a network itself, a CNI attachment, a Docker plugin).
pub fn networks_touched(saved: &State, ops: &[Op<'_>]) -> Option<Touched> {
    let mut touched = Touched {
        sandboxes: Some(Vec::new()),
        ..Touched::default()
    };
    let sandbox_changed = |name: &str, touched: &mut Touched| {
        let old = saved.sandbox(name);
        if let Some(old) = old {
            touched
                .networks
                .extend(old.endpoints.iter().map(|e| e.network.clone()));
        }
        if let Some(list) = touched.sandboxes.as_mut() {
            list.push((name.to_string(), old.cloned()));
        }
    };
    for op in ops {
        match op {
            Op::Put(Put::Sandbox(sb)) => {
                touched
                    .networks
                    .extend(sb.endpoints.iter().map(|e| e.network.clone()));
                sandbox_changed(&sb.name, &mut touched);
            }
            Op::Del {
                kind: Kind::Sandbox,
                key,
            } => sandbox_changed(&key[0], &mut touched),
            Op::Put(Put::VmPort(port)) => {
                touched.networks.insert(port.network.clone());
                if let Some(old) = saved.vm_ports.iter().find(|p| p.name == port.name) {
                    touched.networks.insert(old.network.clone());
                }
                touched.sandboxes = None;
            }
            Op::Del {
                kind: Kind::VmPort,
                key,
            } => {
                if let Some(old) = saved.vm_ports.iter().find(|p| p.name == key[0]) {
                    touched.networks.insert(old.network.clone());
                }
                touched.sandboxes = None;
            }
            Op::Requests(_) | Op::AllRequests(_) | Op::Ula(_) => {}
            _ => return None,
        }
    }
    Some(touched)
}

/// Apply a journal's changes to `state`, in order, as `apply` does: a start replays up to a
/// snapshot's worth of commits (10,000 creates, say), each finding its sandbox by the list's
/// name index.
pub fn replay<'a>(state: &mut State, ops: impl IntoIterator<Item = Op<'a>>) {
    for op in ops {
        apply(state, op);
    }
}

/// Apply one change to `state`: a put replaces the entity of its key in place or appends it,
/// a del removes it (a del of what is not there changes nothing, so replaying a journal twice
/// is harmless).
pub fn apply(state: &mut State, op: Op<'_>) {
    match op {
        Op::Put(Put::Network(e)) => put(state, e.into_owned()),
        Op::Put(Put::Sandbox(e)) => put_sandbox(&mut state.sandboxes, Arc::new(e.into_owned())),
        Op::Put(Put::VmPort(e)) => put(state, e.into_owned()),
        Op::Put(Put::Cni(e)) => put(state, e.into_owned()),
        Op::Put(Put::DockerPlugin(e)) => put(state, e.into_owned()),
        Op::Del { kind, key } => {
            let key = [key[0].as_ref(), key[1].as_ref(), key[2].as_ref()];
            match kind {
                Kind::Network => remove::<Network>(state, key),
                Kind::Sandbox => {
                    if let Some(i) = state.sandboxes.position(key[0]) {
                        state.sandboxes.remove(i);
                    }
                }
                Kind::VmPort => remove::<VmPort>(state, key),
                Kind::Cni => remove::<CniAttachment>(state, key),
                Kind::DockerPlugin => remove::<DockerPlugin>(state, key),
            }
        }
        Op::Requests(added) => {
            let ids = &mut state.committed_requests;
            ids.extend(added.into_iter().map(Cow::into_owned));
            while ids.len() > KEPT {
                ids.pop_front();
            }
        }
        Op::AllRequests(ids) => state.committed_requests = ids.into_owned(),
        Op::Ula(ula) => state.ula = ula,
    }
}

/// Replace the sandbox of `sb`'s name, or append it.
pub fn put_sandbox(list: &mut SandboxList, sb: Arc<Sandbox>) {
    match list.position(&sb.name) {
        Some(i) => {
            list.replace(i, sb);
        }
        None => list.push(sb),
    }
}

fn put<E: Listed>(state: &mut State, e: E) {
    let list = E::list_mut(state);
    match list.iter_mut().find(|x| x.key() == e.key()) {
        Some(slot) => *slot = e,
        None => list.push(e),
    }
}

fn remove<E: Listed>(state: &mut State, key: Key<'_>) {
    E::list_mut(state).retain(|x| x.key() != key);
}

/// One commit as a journal line (ending in a newline).
pub fn line(generation: u64, ops: &[Op<'_>]) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Out<'b, 'a> {
        generation: u64,
        ops: &'b [Op<'a>],
    }
    let mut text = serde_json::to_vec(&Out { generation, ops })?;
    text.push(b'\n');
    Ok(text)
}

/// A journal read back.
#[derive(Debug)]
pub struct Replay {
    /// The commits of generation `generation`, in order.
    pub batches: Vec<Batch<'static>>,
    /// Bytes that hold whole lines; anything after is a commit a crash cut short.
    pub good_len: usize,
    /// Lines of another generation were found: the snapshot already holds them.
    pub stale: bool,
}

/// Read `text` as the journal of generation `generation`. A last line without its newline, or one
/// that does not parse, is a commit cut short and dropped; a bad line before the last is
/// corruption, and an error naming its line number.
pub fn read(text: &[u8], generation: u64) -> Result<Replay, String> {
    let mut replay = Replay {
        batches: Vec::new(),
        good_len: 0,
        stale: false,
    };
    let mut offset = 0;
    for (number, chunk) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let last = offset + chunk.len() == text.len();
        let Some(body) = chunk.strip_suffix(b"\n") else {
            break; // cut short: no newline
        };
        match serde_json::from_slice::<Batch<'static>>(body) {
            Ok(batch) if batch.generation == generation => replay.batches.push(batch),
            Ok(_) => replay.stale = true,
            Err(_) if last => break,
            Err(e) => return Err(format!("line {}: {e}", number + 1)),
        }
        offset += chunk.len();
        replay.good_len = offset;
    }
    if replay.stale {
        replay.batches.clear();
    }
    Ok(replay)
}

/// For the fuzz target: read `data` as a journal of any generation and replay what it accepts.
#[doc(hidden)]
pub fn check_arbitrary_journal(data: &[u8]) {
    let generation = data.first().copied().unwrap_or(0) as u64;
    if let Ok(replay) = read(data, generation) {
        let mut state = State::default();
        for batch in replay.batches {
            for op in batch.ops {
                apply(&mut state, op);
            }
        }
        let _ = super::validate::load(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{Driver, Endpoint};

    fn sandbox(name: &str, ip: u8) -> Sandbox {
        Sandbox {
            name: name.into(),
            id: format!("id-{name}"),
            hostname: name.into(),
            endpoints: vec![Endpoint {
                id: format!("ep-{name}"),
                network: "n".into(),
                interface: Some("eth0".into()),
                mac: None,
                ipv4: Some(std::net::Ipv4Addr::new(10, 0, 0, ip)),
                ipv6: None,
                aliases: Vec::new(),
                impairment: None,
                blocked: Vec::new(),
            }],
            ports: Vec::new(),
        }
    }

    fn world(sandboxes: &[(&str, u8)]) -> State {
        State {
            version: State::VERSION,
            networks: vec![Network::for_test("n", Driver::Bridge)],
            sandboxes: sandboxes
                .iter()
                .map(|(n, ip)| Arc::new(sandbox(n, *ip)))
                .collect(),
            ..State::default()
        }
    }

    /// Changes from `a` to `b`, written as a line, read back and replayed on `a`, give `b`.
    fn round_trip(a: &State, b: &State) -> usize {
        let ops = changes(a, b).expect("said as changes");
        let n = ops.len();
        let text = line(7, &ops).unwrap();
        drop(ops);
        let replay = read(&text, 7).unwrap();
        let mut got = a.clone();
        for batch in replay.batches {
            for op in batch.ops {
                apply(&mut got, op);
            }
        }
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(b).unwrap()
        );
        n
    }

    #[test]
    fn nothing_changed_writes_nothing() {
        let a = world(&[("a", 2), ("b", 3)]);
        assert!(changes(&a, &a.clone()).unwrap().is_empty());
    }

    #[test]
    fn a_create_is_one_put_and_a_removal_one_del() {
        let a = world(&[("a", 2), ("b", 3), ("c", 4)]);
        let b = world(&[("a", 2), ("b", 3), ("c", 4), ("d", 5)]);
        assert_eq!(round_trip(&a, &b), 1);
        let c = world(&[("a", 2), ("c", 4), ("d", 5)]);
        let ops = changes(&b, &c).unwrap();
        assert!(
            matches!(&ops[..], [Op::Del { kind: Kind::Sandbox, key }] if key[0] == "b"),
            "{ops:?}"
        );
        assert_eq!(round_trip(&b, &c), 1);
    }

    #[test]
    fn edits_removals_and_appends_replay_exactly() {
        let a = world(&[("a", 2), ("b", 3), ("c", 4), ("d", 5)]);
        // b changed, c gone, x and y new, meta changed.
        let mut b = world(&[("a", 2), ("b", 30), ("d", 5), ("x", 9), ("y", 10)]);
        b.committed_requests.push_back("req-1".into());
        assert_eq!(round_trip(&a, &b), 5);
        round_trip(&b, &world(&[("a", 2), ("y", 10)]));
        round_trip(&a, &world(&[]));
        round_trip(&world(&[]), &a);
    }

    /// The indexed replay of a start gives what applying the changes one by one gives, through
    /// creates, edits, removals in the middle and a name that comes back.
    #[test]
    fn the_indexed_replay_agrees_with_apply() {
        let steps = [
            world(&[("a", 2), ("b", 3)]),
            world(&[("a", 2), ("b", 3), ("c", 4), ("d", 5)]),
            world(&[("a", 2), ("c", 40), ("d", 5)]),
            world(&[("c", 40), ("d", 5), ("b", 7)]),
            world(&[("d", 5), ("b", 8), ("e", 9)]),
        ];
        let mut text = Vec::new();
        for pair in steps.windows(2) {
            text.extend(line(7, &changes(&pair[0], &pair[1]).unwrap()).unwrap());
        }
        let read_back = read(&text, 7).unwrap();
        let ops: Vec<Op<'_>> = read_back.batches.into_iter().flat_map(|b| b.ops).collect();
        let (mut one_by_one, mut replayed) = (steps[0].clone(), steps[0].clone());
        for op in ops.clone() {
            apply(&mut one_by_one, op);
        }
        replay(&mut replayed, ops);
        let names = |s: &State| {
            s.sandboxes
                .iter()
                .map(|sb| sb.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&replayed), ["d", "b", "e"]);
        assert_eq!(names(&replayed), names(&one_by_one));
        assert_eq!(replayed.sandboxes, one_by_one.sandboxes);
        assert_eq!(replayed.sandboxes, steps[4].sandboxes);
    }

    #[test]
    fn an_insertion_before_others_or_a_move_needs_a_snapshot() {
        let a = world(&[("a", 2), ("b", 3), ("c", 4)]);
        assert!(changes(&a, &world(&[("a", 2), ("x", 9), ("b", 3), ("c", 4)])).is_none());
        assert!(changes(&a, &world(&[("b", 3), ("a", 2), ("c", 4)])).is_none());
        // The positive control: the same lists in their order are changes.
        assert!(changes(&a, &world(&[("a", 2), ("c", 4), ("x", 9)])).is_some());
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_a_bad_line_before_the_last_is_an_error() {
        let a = world(&[("a", 2)]);
        let b = world(&[("a", 2), ("b", 3)]);
        let c = world(&[("a", 2), ("b", 3), ("c", 4)]);
        let mut text = line(1, &changes(&a, &b).unwrap()).unwrap();
        let first = text.len();
        text.extend(line(1, &changes(&b, &c).unwrap()).unwrap());
        // Every cut of the second line keeps exactly the first commit.
        for cut in first..text.len() {
            let replay = read(&text[..cut], 1).unwrap();
            assert_eq!(replay.batches.len(), 1, "cut at {cut}");
            assert_eq!(replay.good_len, first, "cut at {cut}");
        }
        assert_eq!(read(&text, 1).unwrap().batches.len(), 2);
        // Damage inside the first line, with a whole line after it: corruption.
        let mut bad = text.clone();
        bad[5] = b'#';
        let err = read(&bad, 1).unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn a_commit_writes_its_own_request_id_not_all_kept() {
        let mut a = world(&[("a", 2)]);
        a.committed_requests = (0..KEPT).map(|i| format!("r{i}")).collect();
        let mut b = a.clone();
        b.committed_requests.pop_front();
        b.committed_requests.push_back("new".into());
        let ops = changes(&a, &b).unwrap();
        assert!(
            matches!(&ops[..], [Op::Requests(added)] if added.len() == 1),
            "{ops:?}"
        );
        round_trip(&a, &b);
        // Not a continuation of the saved ids: written whole.
        let mut c = a.clone();
        c.committed_requests = ["x".to_string()].into_iter().collect();
        let ops = changes(&a, &c).unwrap();
        assert!(matches!(&ops[..], [Op::AllRequests(_)]), "{ops:?}");
        round_trip(&a, &c);
    }

    #[test]
    fn lines_of_another_generation_are_stale() {
        let a = world(&[("a", 2)]);
        let b = world(&[("a", 2), ("b", 3)]);
        let text = line(3, &changes(&a, &b).unwrap()).unwrap();
        let replay = read(&text, 4).unwrap();
        assert!(replay.stale && replay.batches.is_empty());
    }

    #[test]
    fn replaying_twice_changes_nothing_more() {
        let a = world(&[("a", 2), ("b", 3)]);
        let b = world(&[("b", 3), ("c", 4)]);
        let text = line(1, &changes(&a, &b).unwrap()).unwrap();
        let mut got = a.clone();
        for _ in 0..2 {
            for batch in read(&text, 1).unwrap().batches {
                for op in batch.ops {
                    apply(&mut got, op);
                }
            }
        }
        let names: Vec<&str> = got.sandboxes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
    }
}
