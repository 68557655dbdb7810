//! The coordination rules as a pure state machine: a request and the time go in; the reply
//! (or "parked") and the replies of earlier parked requests that it released come out. No
//! I/O, no clock: the server around it owns the sockets and the timers.

mod any_of;
mod barriers;
mod failure_scope;
mod group;
mod locks;
mod mail;
mod operator;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lava_protocol::{Reply, Request, RequestKind, VM_START_ID, VM_STOP_ID};
use serde_json::Value;

pub use group::{Change, Condition, Group, Mutation, Room};
pub use locks::{Lock, Locks};

/// How many characters of a client's text (a name, an id, a reason) an error or a log line
/// quotes; the rest is summed up as `...(N bytes)`.
pub const QUOTE_MAX: usize = 200;

/// Client text cut to [`QUOTE_MAX`] characters, with `...(N bytes)` when it was longer.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTE_MAX) {
        None => text.into(),
        Some((cut, _)) => format!("{}...({} bytes)", &text[..cut], text.len()).into(),
    }
}

/// Client text quoted (as `{:?}` does), cut to [`QUOTE_MAX`] characters.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}...({} bytes)", &text[..cut], text.len()),
    }
}

/// Identifies a parked request; chosen by the caller, unique among parked requests.
pub type WaiterId = u64;

/// The answer to a parked request, to be delivered on its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Wakeup {
    pub waiter: WaiterId,
    pub reply: Reply,
}

/// What `handle` produced.
#[derive(Debug, Default)]
pub struct Output {
    /// The reply to this request; `None` when it was parked.
    pub reply: Option<Reply>,
    /// Earlier parked requests that this one released.
    pub wakeups: Vec<Wakeup>,
}

/// Bounds on what clients can make the coordinator keep, so that a flood or a runaway job
/// cannot exhaust its memory. Over a bound a request gets `nack` saying which.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_groups: usize,
    pub max_group_size: usize,
    /// Message ids plus sync ids in one group.
    pub max_ids_per_group: usize,
    /// Bytes of data (ids, senders, JSON) stored by one group.
    pub max_group_bytes: usize,
    /// Bytes of data stored by all groups together.
    pub max_total_bytes: usize,
}

/// Which failure verdicts the coordinator gives; operators can turn each off.
#[derive(Debug, Clone, Copy)]
pub struct Verdicts {
    /// A member's `fail` answers what waits on it.
    pub failure_propagation: bool,
    /// A group whose live members all wait on each other is answered at once.
    pub deadlock_detection: bool,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            failure_propagation: true,
            deadlock_detection: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_groups: 50_000,
            max_group_size: 4096,
            max_ids_per_group: 10_000,
            max_group_bytes: 16 << 20,
            max_total_bytes: 1 << 30,
        }
    }
}

/// Group lifecycle events worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Created {
        group: String,
        size: usize,
    },
    Complete {
        group: String,
    },
    Cleared {
        group: String,
    },
    Expired {
        group: String,
        idle: Duration,
    },
    Deadlock {
        group: String,
        verdict: String,
    },
    LeaseExpired {
        group: String,
        client: String,
    },
    /// The operator acted on the group.
    Operator {
        group: String,
        operator: String,
        what: String,
    },
}

#[derive(Debug)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    /// Which group each parked request belongs to.
    parked_in: HashMap<WaiterId, String>,
    idle_expiry: Duration,
    events: Vec<Event>,
    /// Groups changed (or deleted) since the last `take_mutations`.
    touched: HashSet<String>,
    limits: Limits,
    verdicts: Verdicts,
    /// The longest the server holds a request (its `block_max`): a lease runs from then.
    block_max: Duration,
    hold_lava_requests: Duration,
    /// Data bytes stored by all groups.
    total_bytes: usize,
    /// Lab-wide locks by name (their places are kept by the holders' groups).
    lab_locks: HashMap<String, locks::LabLock>,
    /// Whether the operator allows lab-wide locks (setting `lab_locks`).
    lab_locks_allowed: bool,
}

impl Coordinator {
    /// `idle_expiry`: a group that sees no request for this long is forgotten.
    pub fn new(idle_expiry: Duration) -> Self {
        Coordinator {
            groups: HashMap::new(),
            parked_in: HashMap::new(),
            idle_expiry,
            events: Vec::new(),
            touched: HashSet::new(),
            limits: Limits::default(),
            verdicts: Verdicts::default(),
            block_max: Duration::from_secs(30),
            hold_lava_requests: Duration::ZERO,
            total_bytes: 0,
            lab_locks: HashMap::new(),
            lab_locks_allowed: false,
        }
    }

    /// Allows lab-wide locks, shared by every group.
    pub fn with_lab_locks(mut self, allowed: bool) -> Self {
        self.lab_locks_allowed = allowed;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_block_max(mut self, block_max: Duration) -> Self {
        self.block_max = block_max;
        self
    }

    /// How long a request without `block` (LAVA's client) is held before `wait`.
    pub fn with_hold_lava_requests(mut self, hold: Duration) -> Self {
        self.hold_lava_requests = hold;
        self
    }

    /// How long `req` may be held instead of answering `wait` (the server's rule, and where
    /// a lease starts): its `block`, at most `block_max`; without `block`,
    /// `hold_lava_requests`.
    pub fn hold_for(&self, req: &Request) -> Duration {
        match req.block {
            Some(block) => Duration::from_secs_f64(block.clamp(0.0, 86_400.0)).min(self.block_max),
            None => self.hold_lava_requests,
        }
    }

    pub fn with_verdicts(mut self, verdicts: Verdicts) -> Self {
        self.verdicts = verdicts;
        self
    }

    /// Bytes kept by all groups (what counts against `max_total_bytes`).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// The same, counted from scratch (a check of the running count).
    pub fn recount_bytes(&self) -> usize {
        self.groups
            .values()
            .map(|g| {
                let (messages, meta) = g.recount();
                messages + meta
            })
            .sum()
    }

    /// Puts back a group read from the store.
    pub fn restore(&mut self, mut group: Group) {
        group.accounted = group.stored_bytes();
        self.total_bytes += group.accounted;
        self.index_lab_places(&group);
        self.groups.insert(group.name.clone(), group);
    }

    /// Brings the total up to date with what a group keeps now.
    fn account(&mut self, group_name: &str) {
        if let Some(group) = self.groups.get_mut(group_name) {
            let now = group.stored_bytes();
            self.total_bytes = self.total_bytes + now - group.accounted;
            group.accounted = now;
        }
    }

    /// What changed since the last call, to be stored before any reply computed since leaves.
    pub fn take_mutations(&mut self) -> Vec<Mutation> {
        let mut out = Vec::new();
        for name in self.touched.drain() {
            match self.groups.get_mut(&name) {
                Some(group) => group.take_mutations(&mut out),
                None => out.push(Mutation::DeleteGroup { group: name }),
            }
        }
        out
    }

    /// Every group as rows, for a state file written anew; what was pending is in it.
    pub fn snapshot(&mut self) -> Vec<Mutation> {
        let mut out = Vec::new();
        for name in self.touched.drain() {
            if !self.groups.contains_key(&name) {
                out.push(Mutation::DeleteGroup { group: name });
            }
        }
        for group in self.groups.values_mut() {
            group.snapshot(&mut out);
        }
        out
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn parked_count(&self) -> usize {
        self.parked_in.len()
    }

    /// Lifecycle events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Handles one request at `now`. Where the answer would be `wait` and `park` is given,
    /// the request is parked under that id instead, and its reply comes later as a
    /// [`Wakeup`] (from this or a later call) unless [`Coordinator::cancel`] takes it back.
    pub fn handle(&mut self, req: &Request, now: Instant, park: Option<WaiterId>) -> Output {
        if let RequestKind::Operator { action } = &req.kind {
            return self.operate(req, action, now);
        }
        let mut out = Output::default();
        if matches!(req.kind, RequestKind::Fail { .. }) && !self.verdicts.failure_propagation {
            out.reply = Some(Reply::nack(
                "failure propagation is turned off on this coordinator",
            ));
            return out;
        }
        if let Some(why) = self.refuse_lock(req) {
            out.reply = Some(Reply::nack(why));
            return out;
        }
        let room = Room {
            max_ids: self.limits.max_ids_per_group,
            max_group_bytes: self.limits.max_group_bytes,
            total_free: self.limits.max_total_bytes.saturating_sub(self.total_bytes),
        };
        let group = match self.enter(req, now, room) {
            Ok(group) => group,
            Err(error) => {
                out.reply = Some(Reply::nack(error));
                return out;
            }
        };
        let (group, registered) = group;
        let (condition, change, reply) = match group.retried_sync(req) {
            Some(reply) => (None, None, Some(reply)),
            None if matches!(
                req.kind,
                RequestKind::Lock { .. } | RequestKind::Unlock { .. }
            ) =>
            {
                let (condition, reply, served) = self.apply_lock(req);
                out.wakeups.extend(served);
                (condition, None, reply)
            }
            None => Self::apply(group, req),
        };
        // A member that fails or leaves gives its places in locks back.
        let client = req.client_name.as_str();
        match &req.kind {
            RequestKind::Fail { reason } => {
                let why = format!("{} failed: {}", quoted(client), bounded(reason));
                out.wakeups
                    .extend(self.free_places(&req.group_name, client, &why));
            }
            RequestKind::ClearGroup => {
                let why = format!("{} cleared the group", quoted(client));
                out.wakeups
                    .extend(self.free_places(&req.group_name, client, &why));
            }
            _ => {}
        }
        for change in [registered.then_some(Change::Registered), change]
            .into_iter()
            .flatten()
        {
            out.wakeups.extend(self.release(&req.group_name, &change));
        }
        let Some(group) = self.groups.get_mut(&req.group_name) else {
            // The request deleted the group (the last clear_group).
            out.reply = reply;
            return out;
        };
        out.reply = match (reply, condition) {
            (Some(reply), _) => Some(reply),
            (None, Some(condition)) => match group.answer(&req.client_name, &condition) {
                Some(reply) => Some(reply),
                None => match park {
                    Some(waiter) => {
                        group.parked.push(group::Parked {
                            waiter,
                            client: req.client_name.clone(),
                            condition,
                            since: now,
                            logged: false,
                        });
                        self.parked_in.insert(waiter, req.group_name.clone());
                        None
                    }
                    None => Some(Reply::wait()),
                },
            },
            (None, None) => Some(Reply::ack()),
        };
        let hold = self.hold_for(req);
        if let (Some(lease), Some(group)) = (req.lease, self.groups.get_mut(&req.group_name)) {
            let waiting = out.reply.as_ref().is_none_or(Reply::is_wait);
            // A lease of 0 promises nothing: the tool's last ask before its own timeout.
            if waiting && lease > 0.0 {
                // The held time, then the lease: time to ask again after a `wait`.
                let lease = Duration::from_secs_f64(lease.min(86_400.0));
                group
                    .leases
                    .insert(req.client_name.clone(), now + hold + lease);
            } else {
                group.leases.remove(&req.client_name);
            }
        }
        if self.verdicts.deadlock_detection {
            out.wakeups.extend(self.resolve_deadlock(&req.group_name));
        }
        self.account(&req.group_name);
        // This very request may be among those a verdict answered.
        if let (None, Some(waiter)) = (&out.reply, park) {
            if let Some(i) = out.wakeups.iter().position(|w| w.waiter == waiter) {
                out.reply = Some(out.wakeups.swap_remove(i).reply);
            }
        }
        out
    }

    /// Answers every held request of a deadlocked group with the verdict.
    fn resolve_deadlock(&mut self, group_name: &str) -> Vec<Wakeup> {
        let Some(group) = self.groups.get_mut(group_name) else {
            return Vec::new();
        };
        let Some(verdict) = group.deadlock() else {
            return Vec::new();
        };
        self.events.push(Event::Deadlock {
            group: bounded(group_name).into_owned(),
            verdict: verdict.clone(),
        });
        let parked = std::mem::take(&mut group.parked);
        for p in &parked {
            group.answered(&p.client);
        }
        parked
            .into_iter()
            .map(|p| {
                self.parked_in.remove(&p.waiter);
                Wakeup {
                    waiter: p.waiter,
                    reply: Reply::nack(verdict.clone()),
                }
            })
            .collect()
    }

    /// Finds or creates the request's group and registers its client (`true`: newly), once
    /// the request is admitted: a refused request changes nothing (no group created, no
    /// client registered, nothing to store).
    fn enter(
        &mut self,
        req: &Request,
        now: Instant,
        room: Room,
    ) -> Result<(&mut Group, bool), String> {
        let mut fresh = None;
        if !self.groups.contains_key(&req.group_name) {
            let size = match (&req.kind, req.group_size) {
                (_, Some(size)) => size as usize,
                (RequestKind::DeclareRoster { roster }, None) if !roster.is_empty() => roster.len(),
                _ => {
                    return Err(format!(
                    "group {} does not exist and the request carries no group_size to create it",
                    quoted(&req.group_name)
                ))
                }
            };
            if self.groups.len() >= self.limits.max_groups {
                return Err(format!(
                    "the coordinator already has {} groups (limit max_groups)",
                    self.groups.len()
                ));
            }
            if size > self.limits.max_group_size {
                return Err(format!(
                    "group_size {size} is over the limit of {} (max_group_size)",
                    self.limits.max_group_size
                ));
            }
            let mut group = Group::new(&req.group_name, size, now);
            group.set_secret(req.group_secret.clone());
            fresh = Some(group);
        }
        match &fresh {
            Some(group) => group.admit(req, room, group.stored_bytes())?,
            None => match self.groups.get(&req.group_name) {
                Some(group) => group.admit(req, room, 0)?,
                None => return Err("group vanished".to_owned()),
            },
        }
        if let Some(group) = fresh {
            self.events.push(Event::Created {
                group: bounded(&req.group_name).into_owned(),
                size: group.size,
            });
            self.groups.insert(req.group_name.clone(), group);
        }
        self.touched.insert(req.group_name.clone());
        let group = self
            .groups
            .get_mut(&req.group_name)
            .ok_or_else(|| "group vanished".to_owned())?;
        group.last_active = now;
        // Declaring the roster comes before the declarer's own registration, so that it is
        // checked against the roster.
        if let RequestKind::DeclareRoster { roster } = &req.kind {
            group.declare_roster(roster)?;
        }
        let registered = group.register(&req.client_name, req.role.as_deref())?;
        if registered && group.is_complete() {
            self.events.push(Event::Complete {
                group: bounded(&req.group_name).into_owned(),
            });
        }
        Ok((group, registered))
    }

    /// Applies the request's own effect. Returns what it waits on (if it may wait), what
    /// changed, and its reply when that is already decided.
    fn apply(
        group: &mut Group,
        req: &Request,
    ) -> (Option<Condition>, Option<Change>, Option<Reply>) {
        let client = req.client_name.as_str();
        let wait = |condition| (Some(condition), None, None);
        if let Some((id, data)) = group::sent_data(&req.kind) {
            group.send(client, id, data);
            return (None, Some(Change::Sent(id.to_owned())), None);
        }
        match &req.kind {
            RequestKind::GroupData => wait(Condition::GroupComplete),
            RequestKind::Roster => wait(Condition::Roster),
            RequestKind::DeclareRoster { .. } => (None, Some(Change::RosterDeclared), None),
            RequestKind::Complete => (None, None, None),
            // Handled above.
            RequestKind::Send { .. } | RequestKind::VmStart { .. } | RequestKind::VmStop { .. } => {
                (None, None, None)
            }
            RequestKind::Wait { id } => wait(Condition::Sent {
                id: id.clone(),
                vm_start: false,
            }),
            RequestKind::VmWaitStart => wait(Condition::Sent {
                id: VM_START_ID.into(),
                vm_start: true,
            }),
            RequestKind::WaitAll { id, role } => wait(Condition::AllSent {
                id: id.clone(),
                role: role.clone(),
                vm_stop: false,
            }),
            RequestKind::SendTo { to, id, message } => {
                group.send_to(client, to, id, message.clone());
                (None, Some(Change::Sent(id.clone())), None)
            }
            RequestKind::Enqueue { id, to, message } => {
                group.enqueue(client, id, to.as_deref(), message.clone());
                (None, Some(Change::Queued(id.clone())), None)
            }
            RequestKind::FailureScope { roles } => {
                group.set_failure_scope(client, roles.as_deref());
                // Waits of the member's other calls are judged anew.
                (None, Some(Change::Failed), None)
            }
            RequestKind::Barrier { id, parties } => {
                match group.arrive_at_barrier(client, id, parties, req.request_id.as_deref()) {
                    Some(reply) => (None, None, Some(reply)),
                    None => (
                        Some(Condition::Barrier {
                            id: id.clone(),
                            parties: parties.clone(),
                        }),
                        Some(Change::BarrierArrived(id.clone())),
                        None,
                    ),
                }
            }
            RequestKind::Consume { id } => match group.retried_consume(req) {
                Some(reply) => (None, None, Some(reply)),
                None => wait(Condition::Consume {
                    id: id.clone(),
                    request_id: req.request_id.clone(),
                }),
            },
            RequestKind::WaitAny { ids, role } => wait(Condition::AnySent {
                ids: ids.clone(),
                role: role.clone(),
            }),
            RequestKind::VmWaitAll => wait(Condition::AllSent {
                id: VM_STOP_ID.into(),
                role: None,
                vm_stop: true,
            }),
            RequestKind::Sync { id, message } => {
                match group.arrive_at_sync(client, id, message, req.request_id.as_deref()) {
                    None => (
                        Some(Condition::Synced { id: id.clone() }),
                        Some(Change::SyncArrived(id.clone())),
                        None,
                    ),
                    // A retry of a call already answered.
                    Some(reply) => (None, None, Some(reply)),
                }
            }
            RequestKind::Fail { reason } => {
                group.fail(client, reason);
                (None, Some(Change::Failed), None)
            }
            RequestKind::ClearGroup => {
                group.clear(client);
                (None, Some(Change::Cleared), Some(Reply::ack()))
            }
            // Handled by `apply_lock` and `operate`.
            RequestKind::Lock { .. }
            | RequestKind::Unlock { .. }
            | RequestKind::Operator { .. } => (None, None, None),
            RequestKind::Aggregate => (
                None,
                None,
                Some(Reply::nack(
                    "aggregate is not supported: LAVA's dispatcher no longer sends it",
                )),
            ),
        }
    }

    /// Releases what `change` allows in `group_name`, and deletes the group once every
    /// member has cleared it (its parked requests are refused).
    fn release(&mut self, group_name: &str, change: &Change) -> Vec<Wakeup> {
        let Some(group) = self.groups.get_mut(group_name) else {
            return Vec::new();
        };
        let mut wakeups: Vec<Wakeup> = group
            .release(change)
            .into_iter()
            .map(|(waiter, reply)| Wakeup { waiter, reply })
            .collect();
        self.account(group_name);
        let Some(group) = self.groups.get(group_name) else {
            return wakeups;
        };
        if !group.cleared.is_empty() && group.members.keys().all(|c| group.cleared.contains(c)) {
            wakeups.extend(self.remove(group_name, "was cleared by all its members"));
            self.events.push(Event::Cleared {
                group: bounded(group_name).into_owned(),
            });
        }
        for wakeup in &wakeups {
            self.parked_in.remove(&wakeup.waiter);
        }
        wakeups
    }

    /// Deletes a group; its parked requests get `nack`.
    fn remove(&mut self, group_name: &str, why: &str) -> Vec<Wakeup> {
        let Some(group) = self.groups.remove(group_name) else {
            return Vec::new();
        };
        self.touched.insert(group_name.to_owned());
        self.total_bytes -= group.accounted;
        let mut wakeups: Vec<Wakeup> = group
            .parked
            .iter()
            .map(|p| {
                self.parked_in.remove(&p.waiter);
                Wakeup {
                    waiter: p.waiter,
                    reply: Reply::nack(format!("group {group_name:?} {why}")),
                }
            })
            .collect();
        let freed = format!("group {} {why}", quoted(group_name));
        wakeups.extend(self.free_lab_places_of(&group, &freed));
        wakeups
    }

    /// The server could not deliver the reply to `req` (its connection was reset or timed
    /// out). When that reply was the `ack` of a sync call without a `request_id` (LAVA's
    /// client), the member's retry is answered with it rather than opening the next round.
    pub fn reply_lost(&mut self, req: &Request) {
        if let (RequestKind::Sync { id, .. }, None) = (&req.kind, &req.request_id) {
            if let Some(group) = self.groups.get_mut(&req.group_name) {
                group.reply_lost(&req.client_name, id);
            }
        }
    }

    /// Takes back a parked request (its connection timed out or went away). Returns whether
    /// it was still parked; `false` means its wake-up was already emitted.
    pub fn cancel(&mut self, waiter: WaiterId) -> bool {
        let Some(group_name) = self.parked_in.remove(&waiter) else {
            return false;
        };
        if let Some(group) = self.groups.get_mut(&group_name) {
            group.parked.retain(|p| p.waiter != waiter);
        }
        true
    }

    /// What `status` shows of every group (or of `only`): members, what each held request
    /// waits on and since when, and what is stored.
    pub fn status(&self, only: Option<&str>, now: Instant) -> Value {
        let mut groups: Vec<&Group> = self
            .groups
            .values()
            .filter(|g| only.is_none_or(|name| g.name == name))
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Value::Array(groups.into_iter().map(|g| g.status(now)).collect())
    }

    /// Members whose waiting tool stopped asking past its lease count as failed; returns
    /// what that releases.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<Wakeup> {
        if !self.verdicts.failure_propagation {
            return Vec::new();
        }
        let mut gone: Vec<(String, String)> = Vec::new();
        for group in self.groups.values_mut() {
            let expired: Vec<String> = group
                .leases
                .iter()
                .filter(|(client, until)| {
                    **until <= now && !group.parked.iter().any(|p| &p.client == *client)
                })
                .map(|(client, _)| client.clone())
                .collect();
            for client in expired {
                group.leases.remove(&client);
                // Its places in locks are given back below, once no group is borrowed.
                group.fail(
                    &client,
                    "gone: its waiting tool stopped asking (lease expired)",
                );
                gone.push((group.name.clone(), client));
            }
        }
        let mut wakeups = Vec::new();
        for (group, client) in gone {
            self.touched.insert(group.clone());
            self.account(&group);
            self.events.push(Event::LeaseExpired {
                group: bounded(&group).into_owned(),
                client: bounded(&client).into_owned(),
            });
            let why = format!(
                "{} is gone: its waiting tool stopped asking (lease expired)",
                quoted(&client)
            );
            wakeups.extend(self.free_places(&group, &client, &why));
            wakeups.extend(self.release(&group, &Change::Failed));
            if self.verdicts.deadlock_detection {
                wakeups.extend(self.resolve_deadlock(&group));
            }
        }
        wakeups
    }

    /// Held requests that have waited `threshold` or longer and were not reported yet, one
    /// line each, naming whom they wait for.
    pub fn long_waits(&mut self, now: Instant, threshold: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        for group in self.groups.values_mut() {
            let mut report = Vec::new();
            for p in group.parked.iter_mut().filter(|p| !p.logged) {
                let age = now.saturating_duration_since(p.since);
                if age >= threshold {
                    p.logged = true;
                    report.push((p.client.clone(), p.condition.clone(), age));
                }
            }
            for (client, condition, age) in report {
                lines.push(format!(
                    "group {}: {} has waited {}s for {} ({})",
                    quoted(&group.name),
                    bounded(&client),
                    age.as_secs(),
                    condition.describe(),
                    group.waits_on(&condition)
                ));
            }
        }
        lines
    }

    /// How long each held request has been blocked, seconds.
    pub fn blocked_ages(&self, now: Instant) -> Vec<f64> {
        self.groups
            .values()
            .flat_map(|g| g.parked.iter())
            .map(|p| now.saturating_duration_since(p.since).as_secs_f64())
            .collect()
    }

    /// Forgets groups idle for longer than the expiry. A group with a parked request is
    /// not idle: somebody is waiting in it.
    pub fn expire(&mut self, now: Instant) -> Vec<Wakeup> {
        let expired: Vec<(String, Duration)> = self
            .groups
            .values()
            .filter(|g| g.parked.is_empty())
            .filter_map(|g| {
                let idle = now.saturating_duration_since(g.last_active);
                (idle >= self.idle_expiry).then(|| (g.name.clone(), idle))
            })
            .collect();
        let mut wakeups = Vec::new();
        for (group, idle) in expired {
            wakeups.extend(self.remove(&group, "expired"));
            self.events.push(Event::Expired {
                group: bounded(&group).into_owned(),
                idle,
            });
        }
        wakeups
    }
}

#[cfg(test)]
mod tests;
