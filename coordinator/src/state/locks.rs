//! Locks: named places that members take (`lock`) and give back (`unlock`). A lock has
//! `count` places (1: a mutex). A group's locks are its own; a lab-wide lock (where the
//! coordinator allows them) is shared by every group. Each group keeps its members' places,
//! lab-wide ones included, in its stored row, so that a restart finds every holder again;
//! waiters are not stored (their tools ask again).
//!
//! A place is given back at once when its holder unlocks, fails, clears the group, is
//! counted gone (lease), or its group is deleted; the waiter that gets it is told whose place
//! it got and why that was freed. Waiters are served in the order they parked (lab-wide
//! locks: across groups).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use lava_protocol::{LockScope, Reply, Request, RequestKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{bounded, quoted, Condition, Coordinator, Group, WaiterId, Wakeup};

/// One lock as a group keeps it: the whole lock (group scope), or the group's members'
/// places in a lab-wide lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    pub count: u32,
    pub holders: Vec<String>,
}

/// A group's locks and its members' places in lab-wide locks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Locks {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    group: BTreeMap<String, Lock>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lab: BTreeMap<String, Lock>,
}

impl Locks {
    fn map(&self, scope: LockScope) -> &BTreeMap<String, Lock> {
        match scope {
            LockScope::Group => &self.group,
            LockScope::Lab => &self.lab,
        }
    }

    pub fn get(&self, scope: LockScope, name: &str) -> Option<&Lock> {
        self.map(scope).get(name)
    }

    /// Lock names kept (they count against `max_ids_per_group`).
    pub fn names(&self) -> usize {
        self.group.len() + self.lab.len()
    }

    /// Bytes kept: names and holders.
    pub fn bytes(&self) -> usize {
        self.group
            .iter()
            .chain(&self.lab)
            .map(|(name, lock)| name.len() + lock.holders.iter().map(String::len).sum::<usize>())
            .sum()
    }

    /// The locks `client` holds a place in.
    pub fn held_by(&self, client: &str) -> Vec<(LockScope, String)> {
        [LockScope::Group, LockScope::Lab]
            .into_iter()
            .flat_map(|scope| {
                self.map(scope)
                    .iter()
                    .filter(|(_, lock)| lock.holders.iter().any(|h| h == client))
                    .map(move |(name, _)| (scope, name.clone()))
            })
            .collect()
    }

    /// The status view: `{"group": {NAME: {count, holders}}, "lab": {...}}`.
    pub fn status(&self) -> Value {
        let view = |map: &BTreeMap<String, Lock>| -> Value {
            map.iter()
                .map(|(name, lock)| {
                    let lock = json!({"count": lock.count, "holders": lock.holders});
                    (name.clone(), lock)
                })
                .collect::<Map<String, Value>>()
                .into()
        };
        json!({"group": view(&self.group), "lab": view(&self.lab)})
    }
}

impl Group {
    /// Gives `client` a place in the lock, creating it with `count` places.
    fn take_place(&mut self, scope: LockScope, name: &str, count: u32, client: &str) {
        let map = match scope {
            LockScope::Group => &mut self.locks.group,
            LockScope::Lab => &mut self.locks.lab,
        };
        let lock = map.entry(name.to_owned()).or_insert_with(|| {
            self.meta_bytes += name.len();
            Lock {
                count,
                holders: Vec::new(),
            }
        });
        lock.holders.push(client.to_owned());
        self.meta_bytes += client.len();
        self.dirty_meta = true;
    }

    /// Takes `client`'s place in the lock back; a lock nobody holds is forgotten. Returns
    /// whether it held one.
    fn give_back(&mut self, scope: LockScope, name: &str, client: &str) -> bool {
        let map = match scope {
            LockScope::Group => &mut self.locks.group,
            LockScope::Lab => &mut self.locks.lab,
        };
        let Some(lock) = map.get_mut(name) else {
            return false;
        };
        let Some(i) = lock.holders.iter().position(|h| h == client) else {
            return false;
        };
        lock.holders.remove(i);
        self.meta_bytes -= client.len();
        if lock.holders.is_empty() {
            map.remove(name);
            self.meta_bytes -= name.len();
        }
        self.dirty_meta = true;
        true
    }
}

/// A lab-wide lock: its places, and the groups whose members hold them (rebuilt from the
/// groups' rows at a restart).
#[derive(Debug, Clone)]
pub(super) struct LabLock {
    count: u32,
    groups: BTreeSet<String>,
}

/// Whose place a waiter got, and why it was freed.
#[derive(Debug, Clone)]
pub(super) struct Freed {
    pub by: String,
    pub why: String,
}

/// A holder as replies and status name it: the client, or `GROUP/CLIENT` in a lab-wide lock.
fn label(scope: LockScope, group: &str, client: &str) -> String {
    match scope {
        LockScope::Group => client.to_owned(),
        LockScope::Lab => format!("{group}/{client}"),
    }
}

fn what(scope: LockScope, name: &str) -> String {
    match scope {
        LockScope::Group => format!("lock {}", quoted(name)),
        LockScope::Lab => format!("lab-wide lock {}", quoted(name)),
    }
}

impl Coordinator {
    /// Puts a restored group's places in lab-wide locks back in the index.
    pub(super) fn index_lab_places(&mut self, group: &Group) {
        for (name, lock) in &group.locks.lab {
            self.lab_locks
                .entry(name.clone())
                .or_insert_with(|| LabLock {
                    count: lock.count,
                    groups: BTreeSet::new(),
                })
                .groups
                .insert(group.name.clone());
        }
    }

    /// Why a lock request must be refused before it changes anything: lab-wide locks not
    /// allowed, or asked with another count than the lock has. (A group's own locks are
    /// checked by [`Group::admit`].)
    pub(super) fn refuse_lock(&self, req: &Request) -> Option<String> {
        let scope = match &req.kind {
            RequestKind::Lock { scope, .. } | RequestKind::Unlock { scope, .. } => *scope,
            _ => return None,
        };
        if scope == LockScope::Lab && !self.lab_locks_allowed {
            return Some(
                "lab-wide locks are not allowed on this coordinator (setting lab_locks)".into(),
            );
        }
        let RequestKind::Lock {
            name,
            count,
            scope: LockScope::Lab,
        } = &req.kind
        else {
            return None;
        };
        let lab = self.lab_locks.get(name)?;
        let holds = self
            .groups
            .get(&req.group_name)
            .and_then(|g| g.locks.get(LockScope::Lab, name))
            .is_some_and(|l| l.holders.contains(&req.client_name));
        (lab.count != *count && !holds).then(|| {
            format!(
                "{} has {} places; this request asks for {count}",
                what(LockScope::Lab, name),
                lab.count
            )
        })
    }

    /// The lock's places and holders (labelled), if anybody holds it.
    fn places(&self, group: &str, scope: LockScope, name: &str) -> Option<(u32, Vec<String>)> {
        match scope {
            LockScope::Group => {
                let lock = self.groups.get(group)?.locks.get(scope, name)?;
                Some((lock.count, lock.holders.clone()))
            }
            LockScope::Lab => {
                let lab = self.lab_locks.get(name)?;
                let holders = lab
                    .groups
                    .iter()
                    .filter_map(|g| Some((g, self.groups.get(g)?.locks.get(scope, name)?)))
                    .flat_map(|(g, lock)| lock.holders.iter().map(move |c| label(scope, g, c)))
                    .collect();
                Some((lab.count, holders))
            }
        }
    }

    /// What a granted `lock` carries: the lock, its places and holders, and (when the place
    /// was handed over) whose it was and why it was freed.
    fn lock_message(
        &self,
        group: &str,
        scope: LockScope,
        name: &str,
        freed: Option<&Freed>,
    ) -> Value {
        let (count, holders) = self.places(group, scope, name).unwrap_or_default();
        let mut message = json!({
            "lock": name,
            "scope": scope.as_str(),
            "count": count,
            "holders": holders,
        });
        if let (Some(freed), Some(obj)) = (freed, message.as_object_mut()) {
            obj.insert("freed_by".into(), freed.by.clone().into());
            obj.insert("freed_because".into(), freed.why.clone().into());
        }
        message
    }

    fn take_place(&mut self, group: &str, scope: LockScope, name: &str, count: u32, client: &str) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.take_place(scope, name, count, client);
        self.touched.insert(group.to_owned());
        if scope == LockScope::Lab {
            self.lab_locks
                .entry(name.to_owned())
                .or_insert_with(|| LabLock {
                    count,
                    groups: BTreeSet::new(),
                })
                .groups
                .insert(group.to_owned());
        }
        self.account(group);
    }

    fn give_back(&mut self, group: &str, scope: LockScope, name: &str, client: &str) -> bool {
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        if !g.give_back(scope, name, client) {
            return false;
        }
        let share_left = g.locks.get(scope, name).is_some();
        self.touched.insert(group.to_owned());
        if scope == LockScope::Lab && !share_left {
            self.forget_lab_share(group, name);
        }
        self.account(group);
        true
    }

    /// `group` holds no place in the lab-wide lock any more.
    fn forget_lab_share(&mut self, group: &str, name: &str) {
        if let Some(lab) = self.lab_locks.get_mut(name) {
            lab.groups.remove(group);
            if lab.groups.is_empty() {
                self.lab_locks.remove(name);
            }
        }
    }

    /// Applies `lock` or `unlock` (admitted): what it waits on, its reply when decided, and
    /// the waiters it served.
    pub(super) fn apply_lock(
        &mut self,
        req: &Request,
    ) -> (Option<Condition>, Option<Reply>, Vec<Wakeup>) {
        let (group, client) = (req.group_name.as_str(), req.client_name.as_str());
        match &req.kind {
            RequestKind::Lock { name, count, scope } => {
                let (places, holders) = self
                    .places(group, *scope, name)
                    .unwrap_or((*count, Vec::new()));
                let reply = if holders.contains(&label(*scope, group, client)) {
                    // Held already: the retry of a call whose answer was lost.
                    Some(Reply::ack_message(
                        self.lock_message(group, *scope, name, None),
                    ))
                } else if places != *count {
                    Some(Reply::nack(format!(
                        "{} has {places} places; this request asks for {count}",
                        what(*scope, name)
                    )))
                } else if holders.len() < places as usize {
                    self.take_place(group, *scope, name, places, client);
                    Some(Reply::ack_message(
                        self.lock_message(group, *scope, name, None),
                    ))
                } else {
                    let condition = Condition::Lock {
                        name: name.clone(),
                        scope: *scope,
                        count: *count,
                    };
                    return (Some(condition), None, Vec::new());
                };
                (None, reply, Vec::new())
            }
            RequestKind::Unlock { name, scope } => {
                if !self.give_back(group, *scope, name, client) {
                    let why = format!("{} does not hold {}", quoted(client), what(*scope, name));
                    return (None, Some(Reply::nack(why)), Vec::new());
                }
                let freed = Freed {
                    by: label(*scope, group, client),
                    why: "unlocked".into(),
                };
                let wakeups = self.grant(group, *scope, name, &freed);
                (None, Some(Reply::ack()), wakeups)
            }
            _ => (None, None, Vec::new()),
        }
    }

    /// The first parked waiter of the lock: (group, waiter, client, places it asks for).
    fn next_waiter(
        &self,
        group: &str,
        scope: LockScope,
        name: &str,
    ) -> Option<(String, WaiterId, String, u32)> {
        let waits_here = |p: &&super::group::Parked| matches!(&p.condition, Condition::Lock { name: n, scope: s, .. } if n == name && *s == scope);
        let count = |p: &super::group::Parked| match p.condition {
            Condition::Lock { count, .. } => count,
            _ => 1,
        };
        match scope {
            LockScope::Group => {
                let g = self.groups.get(group)?;
                let p = g.parked.iter().find(waits_here)?;
                Some((g.name.clone(), p.waiter, p.client.clone(), count(p)))
            }
            LockScope::Lab => {
                let groups: HashSet<&String> = self.parked_in.values().collect();
                groups
                    .into_iter()
                    .filter_map(|g| self.groups.get(g))
                    .flat_map(|g| g.parked.iter().filter(waits_here).map(move |p| (g, p)))
                    .min_by_key(|(_, p)| (p.since, p.waiter))
                    .map(|(g, p)| (g.name.clone(), p.waiter, p.client.clone(), count(p)))
            }
        }
    }

    /// Gives the lock's free places to its waiters, first parked first served.
    pub(super) fn grant(
        &mut self,
        group: &str,
        scope: LockScope,
        name: &str,
        freed: &Freed,
    ) -> Vec<Wakeup> {
        let mut wakeups = Vec::new();
        while let Some((g, waiter, client, wants)) = self.next_waiter(group, scope, name) {
            let (places, taken) = match self.places(&g, scope, name) {
                Some((count, holders)) => (count, holders.len()),
                // Nobody holds it: the first waiter decides its places.
                None => (wants, 0),
            };
            if taken >= places as usize {
                break;
            }
            let Some(waiting) = self.groups.get_mut(&g) else {
                break;
            };
            waiting.parked.retain(|p| p.waiter != waiter);
            waiting.answered(&client);
            let failed = waiting
                .failed
                .get(&client)
                .map(|why| bounded(why).into_owned());
            self.parked_in.remove(&waiter);
            let holds = self
                .places(&g, scope, name)
                .is_some_and(|(_, holders)| holders.contains(&label(scope, &g, &client)));
            let reply = if let Some(why) = failed {
                Reply::nack(format!(
                    "{} failed ({why}): a failed member takes no lock",
                    quoted(&client)
                ))
            } else if holds {
                // A second held call of the holder (it asked again while held).
                Reply::ack_message(self.lock_message(&g, scope, name, None))
            } else if wants != places {
                Reply::nack(format!(
                    "{} has {places} places; this request asks for {wants}",
                    what(scope, name)
                ))
            } else {
                self.take_place(&g, scope, name, places, &client);
                Reply::ack_message(self.lock_message(&g, scope, name, Some(freed)))
            };
            wakeups.push(Wakeup { waiter, reply });
        }
        wakeups
    }

    /// Gives back every place `client` of `group` holds (it failed, cleared, or was counted
    /// gone), serving the waiters.
    pub(super) fn free_places(&mut self, group: &str, client: &str, why: &str) -> Vec<Wakeup> {
        let held = match self.groups.get(group) {
            Some(g) => g.locks.held_by(client),
            None => return Vec::new(),
        };
        let mut wakeups = Vec::new();
        for (scope, name) in held {
            if self.give_back(group, scope, &name, client) {
                let freed = Freed {
                    by: label(scope, group, client),
                    why: why.to_owned(),
                };
                wakeups.extend(self.grant(group, scope, &name, &freed));
            }
        }
        wakeups
    }

    /// A deleted group's places in lab-wide locks go to the waiters of other groups.
    pub(super) fn free_lab_places_of(&mut self, deleted: &Group, why: &str) -> Vec<Wakeup> {
        let mut wakeups = Vec::new();
        for (name, lock) in &deleted.locks.lab {
            self.forget_lab_share(&deleted.name, name);
            for client in &lock.holders {
                let freed = Freed {
                    by: label(LockScope::Lab, &deleted.name, client),
                    why: why.to_owned(),
                };
                wakeups.extend(self.grant(&deleted.name, LockScope::Lab, name, &freed));
            }
        }
        wakeups
    }

    /// The status view of the lab-wide locks: `{NAME: {count, holders}}`.
    pub fn lab_locks_status(&self) -> Value {
        self.lab_locks
            .keys()
            .filter_map(|name| {
                let (count, holders) = self.places("", LockScope::Lab, name)?;
                Some((name.clone(), json!({"count": count, "holders": holders})))
            })
            .collect::<Map<String, Value>>()
            .into()
    }
}
