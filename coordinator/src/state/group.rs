//! One MultiNode group: its members, the data sent under each message id, the syncs in
//! progress, and the requests parked until their condition holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use indexmap::IndexMap;
use lava_protocol::message::Roles;
use lava_protocol::{LockScope, Parties, Reply, Request, RequestKind, VM_START_ID, VM_STOP_ID};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::barriers::Barriers;
use super::locks::Locks;
use super::mail::Mail;
use super::{bounded, quoted, WaiterId};

/// What a parked (or polling) request waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `group_data`: every member registered.
    GroupComplete,
    /// `roster`: the roster is known (declared, or the group complete).
    Roster,
    /// `lava_wait`: somebody sent the id. `vm` adds the `host_ip` of the start gate.
    Sent { id: String, vm_start: bool },
    /// `lava_wait_all`: every expected member (of `role`) sent the id. `vm` adds `failed`.
    AllSent {
        id: String,
        role: Option<String>,
        vm_stop: bool,
    },
    /// `wait_any`: any of `ids` has been sent (by a member of `role`); see `any_of.rs`.
    AnySent {
        ids: Vec<String>,
        role: Option<String>,
    },
    /// `consume`: an entry of queue `id` the member may take (taken when answered).
    /// `request_id`: the call's, kept with the entry taken for its retry.
    Consume {
        id: String,
        request_id: Option<String>,
    },
    /// `lava_sync`: `group_size` members arrived at the sync.
    Synced { id: String },
    /// `barrier`: the round the member arrived in was released (`barriers.rs`).
    Barrier { id: String, parties: Parties },
    /// `lock`: a place in the lock (`count` places). Only a place given back answers it
    /// (see `locks.rs`), never a change in the group.
    Lock {
        name: String,
        scope: LockScope,
        count: u32,
    },
}

/// What changed in a group, so that only the parked requests it concerns are looked at.
#[derive(Debug, Clone)]
pub enum Change {
    Registered,
    RosterDeclared,
    Sent(String),
    /// An entry was added to a queue.
    Queued(String),
    SyncArrived(String),
    BarrierArrived(String),
    Cleared,
    /// A member declared that it failed.
    Failed,
}

impl Condition {
    fn affected_by(&self, change: &Change) -> bool {
        match (self, change) {
            (Condition::GroupComplete, Change::Registered) => true,
            (Condition::Roster, Change::Registered | Change::RosterDeclared) => true,
            (Condition::AllSent { .. }, Change::Registered | Change::RosterDeclared) => true,
            (Condition::AllSent { id, .. }, Change::Sent(sent)) => id == sent,
            (Condition::Sent { id, .. }, Change::Sent(sent)) => id == sent,
            (Condition::AnySent { ids, .. }, Change::Sent(sent)) => ids.contains(sent),
            (Condition::Consume { id, .. }, Change::Queued(queued)) => id == queued,
            (Condition::Consume { .. }, Change::Failed) => true,
            (Condition::Barrier { id, .. }, Change::BarrierArrived(arrived)) => id == arrived,
            (
                Condition::Barrier { .. },
                Change::Registered | Change::RosterDeclared | Change::Failed,
            ) => true,
            // A role's members become known; a member failed.
            (
                Condition::AnySent { .. },
                Change::Registered | Change::RosterDeclared | Change::Failed,
            ) => true,
            (Condition::Synced { id }, Change::SyncArrived(arrived)) => id == arrived,
            (
                Condition::Synced { .. } | Condition::AllSent { .. } | Condition::Sent { .. },
                Change::Failed,
            ) => true,
            _ => false,
        }
    }
}

/// A member's arrival at a sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyncArrival {
    picked_up: bool,
    /// What the member's reply carries: its own sync message, or the sync id.
    reply: Value,
    /// The arriving call's `request_id`, if it sent one.
    #[serde(default)]
    request_id: Option<String>,
}

/// One sync id: the round in progress, and the members that passed it and already asked
/// for the next round with the same id (LAVA would wrongly count them in the old round).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sync {
    round: IndexMap<String, SyncArrival>,
    next: IndexMap<String, (Value, Option<String>)>,
    /// member -> (request_id, reply) of its last picked-up call with an id: a retry of
    /// that call (its `ack` was lost) is answered again.
    #[serde(default)]
    passed: HashMap<String, (String, Value)>,
}

/// A member's last pick-up of a sync by a call without a `request_id` (LAVA's client): its
/// reply is kept until the member is seen to act on it (any later request), so that the retry
/// of a call whose reply was lost is answered with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PickedUp {
    id: String,
    reply: Value,
    /// Whether the reply may not have reached the member: it was picked up before a restart
    /// (the state was read back), or the server could not deliver it. Only then is the
    /// member's next `lava_sync` on the id a retry rather than the next round.
    #[serde(skip_serializing, default = "picked_up_before_a_restart")]
    in_doubt: bool,
}

fn picked_up_before_a_restart() -> bool {
    true
}

impl PickedUp {
    fn bytes(&self, client: &str) -> usize {
        client.len() + self.id.len() + value_bytes(&self.reply)
    }
}

#[derive(Debug, Clone)]
pub struct Parked {
    pub waiter: WaiterId,
    pub client: String,
    pub condition: Condition,
    pub since: Instant,
    /// Whether its long wait was logged already.
    pub logged: bool,
}

impl Condition {
    /// What the request waits for, in the words of the status view.
    pub fn describe(&self) -> String {
        match self {
            Condition::GroupComplete => "group_data (every member registered)".into(),
            Condition::Roster => "roster".into(),
            Condition::Sent { id, .. } => format!("lava_wait {}", bounded(id)),
            Condition::AllSent {
                id,
                role: Some(role),
                ..
            } => format!("lava_wait_all {} {}", bounded(id), bounded(role)),
            Condition::AllSent { id, role: None, .. } => {
                format!("lava_wait_all {}", bounded(id))
            }
            Condition::Synced { id } => format!("lava_sync {}", bounded(id)),
            Condition::AnySent { ids, role } => super::any_of::describe(ids, role.as_deref()),
            Condition::Consume { id, .. } => format!("consume {}", bounded(id)),
            Condition::Barrier { id, parties } => super::barriers::describe(id, parties),
            Condition::Lock {
                name,
                scope: LockScope::Group,
                ..
            } => format!("lava-lock {}", bounded(name)),
            Condition::Lock { name, .. } => format!("lava-lock --lab {}", bounded(name)),
        }
    }
}

#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub size: usize,
    /// client -> role, in registration order.
    pub members: IndexMap<String, String>,
    /// client -> role, as declared by the group's creator.
    pub roster: Option<Roles>,
    /// message id -> sender -> data, senders in the order they first sent.
    pub messages: HashMap<String, IndexMap<String, Value>>,
    syncs: HashMap<String, Sync>,
    /// member -> its last sync pick-up without a `request_id`, until it acts on it.
    last_sync: HashMap<String, PickedUp>,
    pub cleared: HashSet<String>,
    /// Members that declared they failed, with their reason.
    pub failed: IndexMap<String, String>,
    /// The group's locks, and its members' places in lab-wide locks.
    pub locks: Locks,
    /// Messages to one member, and queues.
    pub mail: Mail,
    /// Barriers on part of the group.
    pub barriers: Barriers,
    /// member -> the roles whose failures end its waits (absent: everybody's).
    pub failure_scopes: BTreeMap<String, Vec<String>>,
    /// When this coordinator created (or restored) the group.
    pub created: Instant,
    /// Members in a waiting call with a lease: when they count as gone unless they ask again.
    pub leases: HashMap<String, Instant>,
    pub last_active: Instant,
    pub parked: Vec<Parked>,
    /// Not stored yet: everything but the messages, and these (id, sender) messages.
    pub(super) dirty_meta: bool,
    dirty_messages: Vec<(String, String)>,
    /// Created since the last store: older rows of the same name must go.
    fresh: bool,
    /// Set by the request that created the group: every request must then carry it.
    pub secret: Option<String>,
    /// Bytes of ids, senders and JSON data under `messages`.
    message_bytes: usize,
    /// Bytes of everything else a client made the group keep: its name and secret, member
    /// names and roles, the roster, sync arrivals and replies, failure reasons, clearings.
    pub(super) meta_bytes: usize,
    /// What the coordinator's total counts of this group (it catches up after each change).
    pub(super) accounted: usize,
}

/// How much more a group may store.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub max_ids: usize,
    pub max_group_bytes: usize,
    /// Bytes still free under the coordinator's total.
    pub total_free: usize,
}

fn entry_bytes(id: &str, sender: &str, data: &Value) -> usize {
    id.len() + sender.len() + value_bytes(data)
}

/// Bytes of a value's JSON text, without building it.
pub(super) fn value_bytes(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Bytes of one arrival at a sync: its member, its reply, its request id.
fn arrival_bytes(client: &str, reply: &Value, request_id: Option<&str>) -> usize {
    client.len() + value_bytes(reply) + request_id.map_or(0, str::len)
}

/// Bytes of the reply kept for a member once it picked up its arrival: with a request id, the
/// id and reply (`Sync::passed`); without, the sync id and reply (`Group::last_sync`).
fn kept_bytes(client: &str, id: &str, reply: &Value, request_id: Option<&str>) -> usize {
    client.len() + value_bytes(reply) + request_id.unwrap_or(id).len()
}

/// Bytes counted for an arrival not picked up yet: the arrival, and the reply kept for the
/// member once it picks it up (counted now, so that a pick-up never grows what is counted).
fn unpicked_bytes(client: &str, id: &str, reply: &Value, request_id: Option<&str>) -> usize {
    arrival_bytes(client, reply, request_id) + kept_bytes(client, id, reply, request_id)
}

impl Sync {
    /// Bytes this sync (`id`) keeps besides its id.
    fn bytes(&self, id: &str) -> usize {
        let round: usize = self
            .round
            .iter()
            .map(|(c, a)| {
                let call = a.request_id.as_deref();
                match a.picked_up {
                    true => arrival_bytes(c, &a.reply, call),
                    false => unpicked_bytes(c, id, &a.reply, call),
                }
            })
            .sum();
        let next: usize = self
            .next
            .iter()
            .map(|(c, (reply, call))| unpicked_bytes(c, id, reply, call.as_deref()))
            .sum();
        let passed: usize = self
            .passed
            .iter()
            .map(|(c, (call, reply))| arrival_bytes(c, reply, Some(call)))
            .sum();
        round + next + passed
    }
}

/// What is stored of a group besides its messages.
#[derive(Serialize)]
struct MetaRef<'a> {
    size: usize,
    members: &'a IndexMap<String, String>,
    roster: &'a Option<Roles>,
    syncs: &'a HashMap<String, Sync>,
    last_sync: &'a HashMap<String, PickedUp>,
    cleared: &'a HashSet<String>,
    secret: &'a Option<String>,
    failed: &'a IndexMap<String, String>,
    locks: &'a Locks,
    mail: &'a Mail,
    barriers: &'a Barriers,
    failure_scopes: &'a BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Meta {
    size: usize,
    members: IndexMap<String, String>,
    roster: Option<Roles>,
    syncs: HashMap<String, Sync>,
    #[serde(default)]
    last_sync: HashMap<String, PickedUp>,
    cleared: HashSet<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    failed: IndexMap<String, String>,
    #[serde(default)]
    locks: Locks,
    #[serde(default)]
    mail: Mail,
    #[serde(default)]
    barriers: Barriers,
    #[serde(default)]
    failure_scopes: BTreeMap<String, Vec<String>>,
}

/// A change to store, as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Forget the group and all its messages.
    DeleteGroup {
        group: String,
    },
    PutGroup {
        group: String,
        meta: String,
    },
    PutMessage {
        group: String,
        id: String,
        sender: String,
        data: String,
    },
    /// A row of the group's history (`history.rs`): one event. Histories outlive their
    /// groups: `DeleteGroup` keeps them.
    PutHistory {
        group: String,
        seq: u64,
        /// Events dropped before the log's first kept one, when this row was taken.
        dropped: u64,
        /// Turned into text by the store's thread, not under the server's lock.
        entry: Box<lava_protocol::timeline::Entry>,
    },
    /// Forget the group's history events numbered below `below`.
    TrimHistory {
        group: String,
        below: u64,
    },
}

impl Mutation {
    /// The group whose rows it writes.
    pub fn group(&self) -> &str {
        match self {
            Mutation::DeleteGroup { group }
            | Mutation::PutGroup { group, .. }
            | Mutation::PutMessage { group, .. }
            | Mutation::PutHistory { group, .. }
            | Mutation::TrimHistory { group, .. } => group,
        }
    }
}

/// What a member's `ack` for sync `id` carries: its own sync message, or the sync id when
/// that is empty (as LAVA does).
fn sync_reply(id: &str, message: &Value) -> Value {
    if is_falsy(message) {
        Value::String(id.to_owned())
    } else {
        message.clone()
    }
}

/// The id and data a request stores as a message, if it sends one.
pub(super) fn sent_data(kind: &RequestKind) -> Option<(&str, Value)> {
    match kind {
        RequestKind::Send { id, message } => Some((id, message.clone())),
        RequestKind::VmStart { host_ip } => Some((VM_START_ID, json!({ "host_ip": host_ip }))),
        RequestKind::VmStop { status, reason } => {
            let mut data = Map::new();
            data.insert("status".into(), status.as_str().into());
            if let Some(reason) = reason {
                data.insert("reason".into(), reason.clone().into());
            }
            Some((VM_STOP_ID, Value::Object(data)))
        }
        _ => None,
    }
}

/// Python's truthiness of a JSON value: LAVA replies to a sync with the sync id when the
/// sync's own message is "empty".
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Groups `client -> role` pairs by role in order of each role's first appearance, as LAVA's
/// `group_data` reply lists them.
fn by_role<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)> + Clone) -> Roles {
    let mut roles: IndexMap<&String, Vec<&String>> = IndexMap::new();
    for (client, role) in pairs {
        roles.entry(role).or_default().push(client);
    }
    roles
        .into_iter()
        .flat_map(|(role, clients)| clients.into_iter().map(move |c| (c.clone(), role.clone())))
        .collect()
}

impl Group {
    pub fn new(name: &str, size: usize, now: Instant) -> Self {
        Group {
            name: name.to_owned(),
            size,
            members: IndexMap::new(),
            roster: None,
            messages: HashMap::new(),
            syncs: HashMap::new(),
            last_sync: HashMap::new(),
            cleared: HashSet::new(),
            failed: IndexMap::new(),
            locks: Locks::default(),
            mail: Mail::default(),
            barriers: Barriers::default(),
            failure_scopes: BTreeMap::new(),
            created: now,
            leases: HashMap::new(),
            last_active: now,
            parked: Vec::new(),
            dirty_meta: true,
            dirty_messages: Vec::new(),
            fresh: true,
            secret: None,
            message_bytes: 0,
            meta_bytes: name.len(),
            accounted: 0,
        }
    }

    /// Bytes a client made this group keep (and which count against the limits).
    pub fn stored_bytes(&self) -> usize {
        self.message_bytes + self.meta_bytes
    }

    /// Sets the group's secret (at creation).
    pub fn set_secret(&mut self, secret: Option<String>) {
        self.meta_bytes -= self.secret.as_deref().map_or(0, str::len);
        self.meta_bytes += secret.as_deref().map_or(0, str::len);
        self.secret = secret;
    }

    /// Counts the bytes kept from scratch: (messages, everything else).
    pub fn recount(&self) -> (usize, usize) {
        let messages = self
            .messages
            .iter()
            .flat_map(|(id, m)| m.iter().map(move |(s, d)| entry_bytes(id, s, d)))
            .sum();
        let pairs = |m: &IndexMap<String, String>| -> usize {
            m.iter().map(|(a, b)| a.len() + b.len()).sum()
        };
        let meta = self.name.len()
            + self.secret.as_deref().map_or(0, str::len)
            + pairs(&self.members)
            + self.roster.as_ref().map_or(0, pairs)
            + self
                .syncs
                .iter()
                .map(|(id, s)| id.len() + s.bytes(id))
                .sum::<usize>()
            + self
                .last_sync
                .iter()
                .map(|(c, p)| p.bytes(c))
                .sum::<usize>()
            + pairs(&self.failed)
            + self.locks.bytes()
            + self.mail.bytes()
            + self.barriers.bytes()
            + self.failure_scopes_bytes()
            + self.cleared.iter().map(String::len).sum::<usize>();
        (messages, meta)
    }

    /// Rebuilds a stored group. `messages`: (id, sender, data) in the order first sent.
    pub fn restore(
        name: &str,
        meta: &str,
        messages: impl IntoIterator<Item = (String, String, Value)>,
        now: Instant,
    ) -> Result<Self, serde_json::Error> {
        let meta: Meta = serde_json::from_str(meta)?;
        let mut group = Group::new(name, meta.size, now);
        group.members = meta.members;
        group.roster = meta.roster;
        group.syncs = meta.syncs;
        group.last_sync = meta.last_sync;
        group.cleared = meta.cleared;
        group.secret = meta.secret;
        group.failed = meta.failed;
        group.locks = meta.locks;
        group.mail = meta.mail;
        group.barriers = meta.barriers;
        group.failure_scopes = meta.failure_scopes;
        for (id, sender, data) in messages {
            group.messages.entry(id).or_default().insert(sender, data);
        }
        (group.message_bytes, group.meta_bytes) = group.recount();
        group.dirty_meta = false;
        group.fresh = false;
        Ok(group)
    }

    /// The status view of this group.
    pub fn status(&self, now: Instant) -> Value {
        let ids: Vec<&String> = {
            let mut ids: Vec<&String> = self.messages.keys().collect();
            ids.sort();
            ids
        };
        let sent: IndexMap<&String, Vec<&String>> = self
            .members
            .keys()
            .map(|client| {
                let by: Vec<&String> = ids
                    .iter()
                    .copied()
                    .filter(|id| self.messages[*id].contains_key(client))
                    .collect();
                (client, by)
            })
            .collect();
        let mut cleared: Vec<&String> = self.cleared.iter().collect();
        cleared.sort();
        let syncs: IndexMap<&String, Vec<&String>> = self
            .syncs
            .iter()
            .map(|(id, s)| (id, s.round.keys().collect()))
            .collect();
        serde_json::json!({
            "name": self.name,
            "size": self.size,
            "registered": self.members.len(),
            "members": self.members,
            "roster_declared": self.roster.is_some(),
            "age_seconds": now.saturating_duration_since(self.created).as_secs(),
            "idle_seconds": now.saturating_duration_since(self.last_active).as_secs(),
            "protected": self.secret.is_some(),
            "cleared": cleared,
            "failed": self.failed,
            "sent": sent,
            "sync_arrivals": syncs,
            "locks": self.locks.status(),
            "mail": self.mail.status(),
            "barriers": self.barriers.status(),
            "failure_scopes": self.failure_scopes,
            "stored_bytes": self.stored_bytes(),
            "blocked": self.parked.iter().map(|p| serde_json::json!({
                "client": p.client,
                "waits_for": p.condition.describe(),
                "seconds": now.saturating_duration_since(p.since).as_secs_f64(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Appends what changed since the last call to `out`.
    pub fn take_mutations(&mut self, out: &mut Vec<Mutation>) {
        if self.fresh {
            out.push(Mutation::DeleteGroup {
                group: self.name.clone(),
            });
            self.fresh = false;
        }
        if self.dirty_meta {
            let meta = MetaRef {
                size: self.size,
                members: &self.members,
                roster: &self.roster,
                syncs: &self.syncs,
                last_sync: &self.last_sync,
                cleared: &self.cleared,
                secret: &self.secret,
                failed: &self.failed,
                locks: &self.locks,
                mail: &self.mail,
                barriers: &self.barriers,
                failure_scopes: &self.failure_scopes,
            };
            out.push(Mutation::PutGroup {
                group: self.name.clone(),
                meta: serde_json::to_string(&meta).unwrap_or_default(),
            });
            self.dirty_meta = false;
        }
        let mut dirty = std::mem::take(&mut self.dirty_messages);
        dirty.sort();
        dirty.dedup();
        for (id, sender) in dirty {
            if let Some(data) = self.messages.get(&id).and_then(|m| m.get(&sender)) {
                out.push(Mutation::PutMessage {
                    group: self.name.clone(),
                    id,
                    sender,
                    data: data.to_string(),
                });
            }
        }
    }

    /// Appends the whole group as rows to `out` (replacing any rows of its name), for a new
    /// state file; what was pending goes with it.
    pub fn snapshot(&mut self, out: &mut Vec<Mutation>) {
        self.fresh = true;
        self.dirty_meta = true;
        self.dirty_messages.clear();
        self.take_mutations(out);
        // Senders in the order they first sent, as the rows' sequence keeps them.
        for (id, senders) in &self.messages {
            for (sender, data) in senders {
                out.push(Mutation::PutMessage {
                    group: self.name.clone(),
                    id: id.clone(),
                    sender: sender.clone(),
                    data: data.to_string(),
                });
            }
        }
    }

    /// Whom a held request waits for, in words.
    pub fn waits_on(&self, condition: &Condition) -> String {
        let roster = self.known_roster();
        let missing = |done: &dyn Fn(&String) -> bool, role: Option<&str>| -> String {
            let names: Vec<&String> = roster
                .map(|r| {
                    r.iter()
                        .filter(|(c, r)| role.is_none_or(|role| r.as_str() == role) && !done(c))
                        .map(|(c, _)| c)
                        .collect()
                })
                .unwrap_or_default();
            match roster {
                None => format!(
                    "the group is not complete ({} of {} registered)",
                    self.members.len(),
                    self.size
                ),
                Some(_) => format!(
                    "missing: {}",
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        match condition {
            Condition::GroupComplete | Condition::Roster => {
                format!("{} of {} members registered", self.members.len(), self.size)
            }
            Condition::Sent { .. } => "nobody has sent it yet".into(),
            Condition::Consume { .. } => "the queue has no entry it may take".into(),
            Condition::Barrier { id, parties } => self.barrier_waits_on(id, parties),
            Condition::AnySent { role: None, .. } => "nobody has sent any of them yet".into(),
            Condition::AnySent {
                role: Some(role), ..
            } => format!(
                "no member of role {} has sent any of them yet",
                bounded(role)
            ),
            Condition::AllSent { id, role, .. } => {
                let sent = self.messages.get(id);
                missing(
                    &|c| sent.is_some_and(|m| m.contains_key(c)),
                    role.as_deref(),
                )
            }
            Condition::Synced { id } => {
                let round = self.syncs.get(id).map(|s| &s.round);
                missing(&|c| round.is_some_and(|r| r.contains_key(c)), None)
            }
            Condition::Lock { name, scope, .. } => match self.locks.get(*scope, name) {
                Some(lock) if *scope == LockScope::Group => {
                    format!("held by {}", lock.holders.join(", "))
                }
                Some(lock) => format!(
                    "held by {} of this group, and maybe members of other groups",
                    lock.holders.join(", ")
                ),
                None => "held by members of other groups".into(),
            },
        }
    }

    /// Records that `client` failed.
    pub fn fail(&mut self, client: &str, reason: &str) {
        if let Some(old) = self.failed.insert(client.to_owned(), reason.to_owned()) {
            self.meta_bytes -= client.len() + old.len();
        }
        self.meta_bytes += client.len() + reason.len();
        self.dirty_meta = true;
    }

    /// Why `condition` can no longer be met now that members failed, if it cannot.
    fn doomed(&self, client: &str, condition: &Condition) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        // The failures that count for this member (its failure scope).
        let failed = self.failures_for(client);
        let failed = failed.as_ref();
        if failed.is_empty() {
            return None;
        }
        let why = |c: &String| format!("member {} failed: {}", quoted(c), bounded(&failed[c]));
        match condition {
            Condition::Synced { id } => {
                let round = self.syncs.get(id).map(|s| &s.round);
                failed
                    .keys()
                    .find(|c| round.is_none_or(|r| !r.contains_key(*c)))
                    .map(why)
            }
            Condition::AllSent { id, role, .. } => {
                let sent = self.messages.get(id);
                self.known_roster()?
                    .iter()
                    .filter(|(_, r)| role.as_deref().is_none_or(|role| r.as_str() == role))
                    .map(|(c, _)| c)
                    .find(|c| failed.contains_key(*c) && sent.is_none_or(|m| !m.contains_key(*c)))
                    .map(why)
            }
            // Anybody may send (or enqueue): only hopeless when every other member failed.
            Condition::Sent { .. } | Condition::Consume { .. } => {
                let mut others = self
                    .known_roster()?
                    .keys()
                    .filter(|c| *c != client)
                    .peekable();
                if others.peek().is_none() || !others.all(|c| failed.contains_key(c)) {
                    return None;
                }
                let names: Vec<String> = failed
                    .iter()
                    .map(|(c, r)| format!("{} ({})", quoted(c), bounded(r)))
                    .collect();
                Some(format!("every other member failed: {}", names.join(", ")))
            }
            Condition::AnySent { role, .. } => self.doomed_any(client, role.as_deref(), failed),
            Condition::Barrier { id, parties } => self.doomed_barrier(id, parties, failed),
            // Members that fail give their places back: a lock is never hopeless.
            Condition::GroupComplete | Condition::Roster | Condition::Lock { .. } => None,
        }
    }

    /// When every live member (registered, not failed, not cleared) is held on a condition,
    /// nobody is left to meet any of them: the description of who waits on what.
    /// A member that is not held (it may still send) prevents the verdict, as does a member
    /// that has not registered yet.
    pub fn deadlock(&self) -> Option<String> {
        if !self.is_complete() || self.parked.is_empty() {
            return None;
        }
        let live: Vec<&String> = self
            .members
            .keys()
            .filter(|c| !self.failed.contains_key(*c) && !self.cleared.contains(*c))
            .collect();
        // Fewer held requests than live members: somebody is free (the usual case, O(1)).
        if live.is_empty() || self.parked.len() < live.len() {
            return None;
        }
        let held: HashSet<&String> = self.parked.iter().map(|p| &p.client).collect();
        if !live.iter().all(|c| held.contains(c)) {
            return None;
        }
        // A member of another group may give a lab-wide lock back.
        if self.parked.iter().any(|p| {
            matches!(
                p.condition,
                Condition::Lock {
                    scope: LockScope::Lab,
                    ..
                }
            )
        }) {
            return None;
        }
        let what: Vec<String> = self
            .parked
            .iter()
            .map(|p| {
                format!(
                    "{} waits for {}",
                    bounded(&p.client),
                    p.condition.describe()
                )
            })
            .collect();
        Some(format!(
            "deadlock in group {}: {}",
            quoted(&self.name),
            what.join("; ")
        ))
    }

    /// Records that `client` cleared the group.
    pub fn clear(&mut self, client: &str) {
        if self.cleared.insert(client.to_owned()) {
            self.meta_bytes += client.len();
            self.dirty_meta = true;
        }
    }

    pub fn is_complete(&self) -> bool {
        self.members.len() >= self.size
    }

    /// Every member, client -> role, once it is known: declared, or all registered.
    pub(super) fn known_roster(&self) -> Option<&Roles> {
        match &self.roster {
            Some(roster) => Some(roster),
            None if self.is_complete() => Some(&self.members),
            None => None,
        }
    }

    /// The role `client` registers with (`None`: it is a member already), or why it may not.
    /// `roster`: the roster that holds by then (a declaration's own).
    fn registration(
        &self,
        client: &str,
        role: Option<&str>,
        roster: Option<&Roles>,
    ) -> Result<Option<String>, String> {
        if self.members.contains_key(client) {
            return Ok(None);
        }
        let declared = roster.map(|r| r.get(client));
        let role = match (declared, role) {
            (Some(None), _) => {
                return Err(format!(
                    "client {} is not in the roster declared for group {}",
                    quoted(client),
                    quoted(&self.name)
                ))
            }
            (Some(Some(declared)), Some(role)) if declared != role => {
                return Err(format!(
                    "client {} registers as role {} but the roster declares {}",
                    quoted(client),
                    quoted(role),
                    quoted(declared)
                ))
            }
            (Some(Some(declared)), _) => declared.clone(),
            (None, Some(role)) => role.to_owned(),
            (None, None) => return Err("missing field `role` to register a new client".into()),
        };
        if self.is_complete() {
            return Err(format!(
                "group {} already has its {} members",
                quoted(&self.name),
                self.size
            ));
        }
        Ok(Some(role))
    }

    /// Registers `client` (a no-op for a member). Returns whether it is new.
    pub fn register(&mut self, client: &str, role: Option<&str>) -> Result<bool, String> {
        let Some(role) = self.registration(client, role, self.roster.as_ref())? else {
            return Ok(false);
        };
        self.meta_bytes += client.len() + role.len();
        self.members.insert(client.to_owned(), role);
        self.dirty_meta = true;
        Ok(true)
    }

    /// Whether `roster` may be declared (`true`: it is new, `false`: the same again).
    fn check_roster(&self, roster: &Roles) -> Result<bool, String> {
        if let Some(existing) = &self.roster {
            return if existing == roster {
                Ok(false)
            } else {
                Err(format!(
                    "group {} already has a different roster",
                    quoted(&self.name)
                ))
            };
        }
        if roster.len() != self.size {
            return Err(format!(
                "roster lists {} members but the group has {}",
                roster.len(),
                self.size
            ));
        }
        if let Some((client, role)) = self
            .members
            .iter()
            .find(|(client, role)| roster.get(*client) != Some(*role))
        {
            return Err(format!(
                "registered client {} (role {}) does not match the roster",
                quoted(client),
                quoted(role)
            ));
        }
        Ok(true)
    }

    /// Declares the roster; a repeat of the same roster is accepted.
    pub fn declare_roster(&mut self, roster: &Roles) -> Result<(), String> {
        if self.check_roster(roster)? {
            self.meta_bytes += roster.iter().map(|(c, r)| c.len() + r.len()).sum::<usize>();
            self.roster = Some(roster.clone());
            self.dirty_meta = true;
        }
        Ok(())
    }

    fn id_count(&self) -> usize {
        self.messages.len()
            + self.syncs.len()
            + self.locks.names()
            + self.mail.ids()
            + self.barriers.len()
    }

    fn too_many_ids(&self, room: Room) -> Result<(), String> {
        if self.id_count() >= room.max_ids {
            return Err(format!(
                "group {} already uses {} ids (limit max_ids_per_group)",
                quoted(&self.name),
                self.id_count()
            ));
        }
        Ok(())
    }

    /// Why `req` must be refused, decided before anything changes, so that a refused request
    /// leaves no trace: the group's secret, the roster it declares, its sender's registration,
    /// the ids and the bytes it would make the group keep (`base`: the bytes of the group
    /// itself when the request creates it).
    pub fn admit(&self, req: &Request, room: Room, base: usize) -> Result<(), String> {
        if let Some(secret) = &self.secret {
            if !crate::access::same_secret(secret, req.group_secret.as_deref()) {
                return Err(format!(
                    "group {} is protected: the request lacks its group_secret",
                    quoted(&self.name)
                ));
            }
        }
        let client = req.client_name.as_str();
        let mut grow = base;
        let mut roster = self.roster.as_ref();
        if let RequestKind::DeclareRoster { roster: declared } = &req.kind {
            if self.check_roster(declared)? {
                grow += declared
                    .iter()
                    .map(|(c, r)| c.len() + r.len())
                    .sum::<usize>();
                roster = Some(declared);
            }
        }
        if let Some(role) = self.registration(client, req.role.as_deref(), roster)? {
            grow += client.len() + role.len();
        }
        match &req.kind {
            RequestKind::Aggregate => {
                return Err(
                    "aggregate is not supported: LAVA's dispatcher no longer sends it".into(),
                )
            }
            RequestKind::Sync { id, message } => {
                if !self.syncs.contains_key(id) {
                    self.too_many_ids(room)?;
                    grow += id.len();
                }
                // The arrival, and the reply kept for the member once it picked it up.
                let reply = sync_reply(id, message);
                grow += unpicked_bytes(client, id, &reply, req.request_id.as_deref());
            }
            RequestKind::Fail { reason } => grow += client.len() + reason.len(),
            RequestKind::FailureScope { .. } => grow += self.scope_admission(req)?,
            RequestKind::Barrier { .. } => {
                let (bytes, fresh) = self.barrier_admission(req)?;
                if fresh {
                    self.too_many_ids(room)?;
                }
                grow += bytes;
            }
            RequestKind::SendTo { .. } | RequestKind::Enqueue { .. } => {
                let (bytes, fresh) = self.mail_growth(req)?;
                if fresh {
                    self.too_many_ids(room)?;
                }
                grow += bytes;
            }
            RequestKind::Lock { .. } if self.failed.contains_key(client) => {
                return Err(format!(
                    "{} failed ({}): a failed member takes no lock",
                    quoted(client),
                    bounded(&self.failed[client])
                ))
            }
            RequestKind::Lock { name, count, scope } => match self.locks.get(*scope, name) {
                Some(lock) if lock.holders.iter().any(|h| h == client) => {}
                // A lab lock's count is checked against every group's places (`locks.rs`).
                Some(lock) if *scope == LockScope::Group && lock.count != *count => {
                    return Err(format!(
                        "lock {} has {} places; this request asks for {count}",
                        quoted(name),
                        lock.count
                    ))
                }
                Some(_) => grow += client.len(),
                None => {
                    self.too_many_ids(room)?;
                    grow += name.len() + client.len();
                }
            },
            RequestKind::Unlock { name, scope } => {
                if !self
                    .locks
                    .get(*scope, name)
                    .is_some_and(|l| l.holders.iter().any(|h| h == client))
                {
                    return Err(format!(
                        "{} does not hold {}lock {}",
                        quoted(client),
                        match scope {
                            LockScope::Group => "",
                            LockScope::Lab => "lab-wide ",
                        },
                        quoted(name)
                    ));
                }
            }
            RequestKind::ClearGroup => grow += client.len(),
            kind => {
                if let Some((id, data)) = sent_data(kind) {
                    let existing = self.messages.get(id);
                    if existing.is_none() {
                        self.too_many_ids(room)?;
                    }
                    let old = existing
                        .and_then(|m| m.get(client))
                        .map_or(0, |d| entry_bytes(id, client, d));
                    grow += entry_bytes(id, client, &data).saturating_sub(old);
                }
            }
        }
        if grow > 0 {
            // `base` is in both (a group being created).
            if self.stored_bytes() + grow - base > room.max_group_bytes {
                return Err(format!(
                    "group {} would store more than {} bytes (limit max_group_bytes)",
                    quoted(&self.name),
                    room.max_group_bytes
                ));
            }
            if grow > room.total_free {
                return Err("the coordinator's store is full (limit max_total_bytes)".into());
            }
        }
        Ok(())
    }

    /// Stores `data` from `sender` under `id`, replacing the sender's earlier data (the
    /// request was admitted: see [`Group::admit`]).
    pub fn send(&mut self, sender: &str, id: &str, data: Value) {
        let new = entry_bytes(id, sender, &data);
        let old = self
            .messages
            .entry(id.to_owned())
            .or_default()
            .insert(sender.to_owned(), data);
        self.message_bytes =
            self.message_bytes + new - old.map_or(0, |d| entry_bytes(id, sender, &d));
        self.dirty_messages.push((id.to_owned(), sender.to_owned()));
    }

    /// Records `client`'s arrival at sync `id` (once per round). Returns the reply at once
    /// when the call is a retry of one already answered.
    pub fn arrive_at_sync(
        &mut self,
        client: &str,
        id: &str,
        message: &Value,
        request_id: Option<&str>,
    ) -> Option<Reply> {
        let reply = sync_reply(id, message);
        if !self.syncs.contains_key(id) {
            self.meta_bytes += id.len();
        }
        let sync = self.syncs.entry(id.to_owned()).or_default();
        if let (Some(call), Some((passed, reply))) = (request_id, sync.passed.get(client)) {
            if call == passed {
                return Some(Reply::ack_message(reply.clone()));
            }
        }
        self.dirty_meta = true;
        let added = unpicked_bytes(client, id, &reply, request_id);
        let request_id = request_id.map(str::to_owned);
        match sync.round.get_mut(client) {
            // Asking again after passing this round: the member is at the next one.
            Some(arrival) if arrival.picked_up => {
                if let Some((old, call)) = sync.next.insert(client.to_owned(), (reply, request_id))
                {
                    self.meta_bytes -= unpicked_bytes(client, id, &old, call.as_deref());
                }
                self.meta_bytes += added;
            }
            // LAVA keeps the latest message of the member's request.
            Some(arrival) => {
                let call = arrival.request_id.as_deref();
                self.meta_bytes -= unpicked_bytes(client, id, &arrival.reply, call);
                self.meta_bytes += unpicked_bytes(client, id, &reply, call);
                arrival.reply = reply;
            }
            None => {
                sync.round.insert(
                    client.to_owned(),
                    SyncArrival {
                        picked_up: false,
                        reply,
                        request_id,
                    },
                );
                self.meta_bytes += added;
            }
        }
        None
    }

    /// When `req` is the retry of a sync call whose reply may have been lost (see
    /// [`PickedUp::in_doubt`]), that reply. Otherwise the member acts after its last sync
    /// reply, which proves it got it: the reply is no longer kept.
    pub fn retried_sync(&mut self, req: &Request) -> Option<Reply> {
        let client = req.client_name.as_str();
        let kept = self.last_sync.get_mut(client)?;
        if let RequestKind::Sync { id, .. } = &req.kind {
            if kept.in_doubt && req.request_id.is_none() && *id == kept.id {
                // Answered again in this run: a further sync on the id is the next round.
                kept.in_doubt = false;
                return Some(Reply::ack_message(kept.reply.clone()));
            }
        }
        let kept = self.last_sync.remove(client)?;
        self.meta_bytes -= kept.bytes(client);
        self.dirty_meta = true;
        None
    }

    /// The member's sync reply (of `id`) could not be delivered: its retry gets it again.
    pub fn reply_lost(&mut self, client: &str, id: &str) {
        if let Some(kept) = self.last_sync.get_mut(client).filter(|k| k.id == id) {
            kept.in_doubt = true;
        }
    }

    /// The reply for `client` waiting on `condition`, or `None` while it must wait.
    /// Answering a sync records the member's pick-up; the last pick-up ends the round so that
    /// the id can be synced again.
    pub fn answer(&mut self, client: &str, condition: &Condition) -> Option<Reply> {
        let answer = self.answer_condition(client, condition);
        if answer.is_some() {
            return answer;
        }
        self.doomed(client, condition).map(Reply::nack)
    }

    fn answer_condition(&mut self, client: &str, condition: &Condition) -> Option<Reply> {
        match condition {
            // Served when a place is given back (`locks.rs`).
            Condition::Lock { .. } => None,
            Condition::AnySent { ids, role } => self.answer_any_sent(client, ids, role.as_deref()),
            Condition::GroupComplete => self
                .is_complete()
                .then(|| Reply::group_data(by_role(self.members.iter()))),
            Condition::Roster => match &self.roster {
                Some(roster) => Some(Reply::roster(by_role(roster.iter()), true)),
                None => self
                    .is_complete()
                    .then(|| Reply::roster(by_role(self.members.iter()), false)),
            },
            Condition::Consume { id, request_id } => {
                self.consume(client, id, request_id.as_deref())
            }
            Condition::Barrier { id, .. } => self.answer_barrier(client, id),
            Condition::Sent { id, vm_start } => {
                let to_all = self.messages.get(id);
                let to_me = self.mail.to(client, id);
                if to_all.is_none() && to_me.is_none() {
                    return None;
                }
                let data: IndexMap<&String, &Value> =
                    to_all.into_iter().chain(to_me).flatten().collect();
                let mut reply = Reply::ack_message(Value::Object(
                    data.iter()
                        .map(|(k, v)| ((*k).clone(), (*v).clone()))
                        .collect(),
                ));
                if *vm_start {
                    reply.host_ip = data
                        .values()
                        .find_map(|d| d.get("host_ip").and_then(Value::as_str))
                        .map(str::to_owned);
                }
                Some(reply)
            }
            Condition::AllSent { id, role, vm_stop } => {
                self.answer_all_sent(id, role.as_deref(), *vm_stop)
            }
            Condition::Synced { id } => {
                let sync = self.syncs.get_mut(id)?;
                if sync.round.len() < self.size || sync.next.contains_key(client) {
                    return None;
                }
                let arrival = sync.round.get_mut(client)?;
                let reply = Reply::ack_message(arrival.reply.clone());
                if arrival.picked_up {
                    // A second held call of the member in the same round (it asked again
                    // while held): the same answer, picked up once.
                    return Some(reply);
                }
                arrival.picked_up = true;
                self.dirty_meta = true;
                // What was counted for the kept reply now counts for the reply kept.
                self.meta_bytes -=
                    kept_bytes(client, id, &arrival.reply, arrival.request_id.as_deref());
                let earlier = match &arrival.request_id {
                    Some(call) => {
                        self.meta_bytes += arrival_bytes(client, &arrival.reply, Some(call));
                        let passed = (call.clone(), arrival.reply.clone());
                        sync.passed.insert(client.to_owned(), passed)
                    }
                    None => {
                        let kept = PickedUp {
                            id: id.clone(),
                            reply: arrival.reply.clone(),
                            in_doubt: false,
                        };
                        self.meta_bytes += kept.bytes(client);
                        if let Some(old) = self.last_sync.insert(client.to_owned(), kept) {
                            self.meta_bytes -= old.bytes(client);
                        }
                        sync.passed.remove(client)
                    }
                };
                if let Some((call, reply)) = earlier {
                    self.meta_bytes -= arrival_bytes(client, &reply, Some(&call));
                }
                if sync.round.values().all(|a| a.picked_up) {
                    self.meta_bytes -= sync
                        .round
                        .iter()
                        .map(|(c, a)| arrival_bytes(c, &a.reply, a.request_id.as_deref()))
                        .sum::<usize>();
                    // Round over: the next round asked for starts (it may be empty).
                    sync.round = std::mem::take(&mut sync.next)
                        .into_iter()
                        .map(|(client, (reply, request_id))| {
                            let arrival = SyncArrival {
                                picked_up: false,
                                reply,
                                request_id,
                            };
                            (client, arrival)
                        })
                        .collect();
                    if sync.round.is_empty() && sync.passed.is_empty() {
                        self.syncs.remove(id);
                        self.meta_bytes -= id.len();
                    }
                }
                Some(reply)
            }
        }
    }

    fn answer_all_sent(&self, id: &str, role: Option<&str>, vm_stop: bool) -> Option<Reply> {
        let roster = self.known_roster()?;
        let expected: Vec<&String> = roster
            .iter()
            .filter(|(_, r)| role.is_none_or(|role| r.as_str() == role))
            .map(|(client, _)| client)
            .collect();
        if expected.is_empty() {
            return Some(Reply::nack(format!(
                "no member of group {:?} has role {:?}",
                self.name,
                role.unwrap_or_default()
            )));
        }
        let data = self.messages.get(id)?;
        if !expected.iter().all(|client| data.contains_key(*client)) {
            return None;
        }
        let mut reply = Reply::ack_message(Value::Object(
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
        if vm_stop {
            reply.failed = Some(
                data.iter()
                    .filter(|(_, d)| d.get("status").and_then(Value::as_str) == Some("failed"))
                    .map(|(client, _)| client.clone())
                    .collect(),
            );
        }
        Some(reply)
    }

    /// A held call of `client` was answered: its tool goes on with its script and owes no
    /// further call, so its lease ends (unless another call of it is still held).
    pub fn answered(&mut self, client: &str) {
        if !self.parked.iter().any(|p| p.client == client) {
            self.leases.remove(client);
        }
    }

    /// Answers the parked requests that `change` may have released, in the order they parked.
    pub fn release(&mut self, change: &Change) -> Vec<(WaiterId, Reply)> {
        // A role's members may have become known: rounds of its barriers may be complete.
        if matches!(change, Change::Registered | Change::RosterDeclared) {
            let ids: Vec<String> = self.barriers.ids().cloned().collect();
            for id in ids {
                self.complete_round(&id);
            }
        }
        let mut released = Vec::new();
        // Answers that do not depend on the asking member, computed once per condition.
        let mut shared: Vec<(Condition, Option<Reply>)> = Vec::new();
        let mut i = 0;
        while i < self.parked.len() {
            let parked = &self.parked[i];
            if !parked.condition.affected_by(change) {
                i += 1;
                continue;
            }
            let (client, condition) = (parked.client.clone(), parked.condition.clone());
            // Answers that depend on the member: its sync pick-up, its queue entry, what was
            // sent to it alone.
            let own = match condition {
                Condition::Synced { .. }
                | Condition::Consume { .. }
                | Condition::Barrier { .. } => true,
                // A member's failure scope makes its verdicts its own.
                _ if !self.failure_scopes.is_empty() => true,
                Condition::Sent { .. } | Condition::AnySent { .. } => !self.mail.is_empty(),
                _ => false,
            };
            let answer = if own {
                self.answer(&client, &condition)
            } else if let Some((_, answer)) = shared.iter().find(|(c, _)| *c == condition) {
                answer.clone()
            } else {
                let answer = self.answer(&client, &condition);
                shared.push((condition, answer.clone()));
                answer
            };
            match answer {
                Some(reply) => {
                    let parked = self.parked.remove(i);
                    self.answered(&parked.client);
                    released.push((parked.waiter, reply));
                }
                None => i += 1,
            }
        }
        released
    }
}
