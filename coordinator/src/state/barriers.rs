//! Barriers on part of a group (`barrier`): released once every member of a role, or a
//! number of members (whoever they are), arrived; then the next arrivals make the next
//! round. Each round is numbered from 1 (status shows the round in progress). A member
//! released from a round picks its answer up once (a polling client on its next ask); its
//! retry of the same call (`request_id`) is answered again rather than opening a new round.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use lava_protocol::{Parties, Reply, Request, RequestKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{bounded, quoted, Group};

/// A member released from a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Passed {
    round: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    picked_up: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Barrier {
    parties: Parties,
    /// The round in progress, from 1.
    round: u64,
    /// Arrivals in this round: member -> its call's `request_id`.
    arrived: IndexMap<String, Option<String>>,
    /// Members released from a round, until their next arrival.
    passed: BTreeMap<String, Passed>,
}

impl Barrier {
    fn bytes(&self, id: &str) -> usize {
        let parties = match &self.parties {
            Parties::Role(role) => role.len(),
            Parties::Count(_) => 0,
        };
        let calls = |c: &String, r: &Option<String>| c.len() + r.as_deref().map_or(0, str::len);
        id.len()
            + parties
            + self.arrived.iter().map(|(c, r)| calls(c, r)).sum::<usize>()
            + self
                .passed
                .iter()
                .map(|(c, p)| calls(c, &p.request_id))
                .sum::<usize>()
    }
}

/// A group's barriers by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Barriers(BTreeMap<String, Barrier>);

impl Barriers {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.0.iter().map(|(id, b)| b.bytes(id)).sum()
    }

    /// The status view: `{ID: {"for", "round", "arrived"}}`.
    pub fn status(&self) -> Value {
        self.0
            .iter()
            .map(|(id, b)| {
                let parties = match &b.parties {
                    Parties::Role(role) => format!("role {role}"),
                    Parties::Count(n) => format!("{n} members"),
                };
                let view = json!({
                    "for": parties,
                    "round": b.round,
                    "arrived": b.arrived.keys().collect::<Vec<_>>(),
                });
                (id.clone(), view)
            })
            .collect::<Map<String, Value>>()
            .into()
    }
}

fn describe_parties(parties: &Parties) -> String {
    match parties {
        Parties::Role(role) => format!("every member of role {}", quoted(role)),
        Parties::Count(n) => format!("{n} members"),
    }
}

/// How status and verdicts name a wait at barrier `id`.
pub(super) fn describe(id: &str, parties: &Parties) -> String {
    match parties {
        Parties::Role(role) => format!("barrier {} (role {})", bounded(id), bounded(role)),
        Parties::Count(n) => format!("barrier {} ({n} members)", bounded(id)),
    }
}

fn released(id: &str, round: u64) -> Reply {
    Reply::ack_message(json!({"barrier": id, "round": round}))
}

impl Group {
    /// Why a barrier request must be refused before it changes anything, else the bytes it
    /// may make the group keep and whether the id is new.
    pub(super) fn barrier_admission(&self, req: &Request) -> Result<(usize, bool), String> {
        let RequestKind::Barrier { id, parties } = &req.kind else {
            return Ok((0, false));
        };
        let client = req.client_name.as_str();
        if let Some(existing) = self.barriers.0.get(id) {
            if existing.parties != *parties {
                return Err(format!(
                    "barrier {} is for {}; this request asks for {}",
                    quoted(id),
                    describe_parties(&existing.parties),
                    describe_parties(parties)
                ));
            }
        }
        match parties {
            Parties::Count(n) if *n as usize > self.size => {
                return Err(format!(
                    "a barrier of {n} members in group {} of {}",
                    quoted(&self.name),
                    self.size
                ))
            }
            Parties::Role(role) => {
                let member_role = self
                    .members
                    .get(client)
                    .or_else(|| self.roster.as_ref().and_then(|r| r.get(client)))
                    .or(req.role.as_ref());
                if member_role != Some(role) {
                    return Err(format!(
                        "{} is not a member of role {}: only they meet at barrier {}",
                        quoted(client),
                        quoted(role),
                        quoted(id)
                    ));
                }
            }
            Parties::Count(_) => {}
        }
        let fresh = !self.barriers.0.contains_key(id);
        let parties_bytes = match parties {
            Parties::Role(role) => role.len(),
            Parties::Count(_) => 0,
        };
        let call = req.request_id.as_deref().map_or(0, str::len);
        // The arrival, and the same again once it passed.
        let grow = 2 * (client.len() + call) + if fresh { id.len() + parties_bytes } else { 0 };
        Ok((grow, fresh))
    }

    /// Records `client`'s arrival at barrier `id` (admitted). Returns its answer at once when
    /// the call is one answered already (a pick-up, or the retry of a call whose answer was
    /// lost); otherwise the member waits (the round may complete right away).
    pub(super) fn arrive_at_barrier(
        &mut self,
        client: &str,
        id: &str,
        parties: &Parties,
        request_id: Option<&str>,
    ) -> Option<Reply> {
        let before = self.barriers.bytes();
        let barrier = self
            .barriers
            .0
            .entry(id.to_owned())
            .or_insert_with(|| Barrier {
                parties: parties.clone(),
                round: 1,
                arrived: IndexMap::new(),
                passed: BTreeMap::new(),
            });
        let answer = match barrier.passed.get_mut(client) {
            // Released, and this is its first ask since: the answer of the released call.
            Some(p) if !p.picked_up => {
                p.picked_up = true;
                Some(released(id, p.round))
            }
            Some(p) if request_id.is_some() && p.request_id.as_deref() == request_id => {
                Some(released(id, p.round))
            }
            _ => None,
        };
        if answer.is_none() {
            barrier.passed.remove(client);
            if !barrier.arrived.contains_key(client) {
                barrier
                    .arrived
                    .insert(client.to_owned(), request_id.map(str::to_owned));
            }
        }
        self.dirty_meta = true;
        self.meta_bytes = self.meta_bytes + self.barriers.bytes() - before;
        self.complete_round(id);
        answer
    }

    /// Ends the round in progress of barrier `id` when its parties have all arrived.
    pub(super) fn complete_round(&mut self, id: &str) {
        let expected: Option<Vec<String>> = match self.barriers.0.get(id).map(|b| &b.parties) {
            Some(Parties::Role(role)) => self.known_roster().map(|r| {
                r.iter()
                    .filter(|(_, rr)| *rr == role)
                    .map(|(c, _)| c.clone())
                    .collect()
            }),
            _ => None,
        };
        let before = self.barriers.bytes();
        let Some(barrier) = self.barriers.0.get_mut(id) else {
            return;
        };
        let complete = match &barrier.parties {
            Parties::Count(n) => barrier.arrived.len() >= *n as usize,
            Parties::Role(_) => expected.is_some_and(|expected| {
                !expected.is_empty() && expected.iter().all(|c| barrier.arrived.contains_key(c))
            }),
        };
        if !complete {
            return;
        }
        for (client, request_id) in std::mem::take(&mut barrier.arrived) {
            let passed = Passed {
                round: barrier.round,
                request_id,
                picked_up: false,
            };
            barrier.passed.insert(client, passed);
        }
        barrier.round += 1;
        self.dirty_meta = true;
        self.meta_bytes = self.meta_bytes + self.barriers.bytes() - before;
    }

    /// The answer of `client` waiting at barrier `id`, once its round was released.
    pub(super) fn answer_barrier(&mut self, client: &str, id: &str) -> Option<Reply> {
        let barrier = self.barriers.0.get_mut(id)?;
        let passed = barrier.passed.get_mut(client)?;
        if !passed.picked_up {
            passed.picked_up = true;
            self.dirty_meta = true;
        }
        Some(released(id, passed.round))
    }

    /// Why the round `client` waits in can no longer be released, if it cannot.
    /// `failed`: the failures that count for the waiter (its failure scope).
    pub(super) fn doomed_barrier(
        &self,
        id: &str,
        parties: &Parties,
        failed: &IndexMap<String, String>,
    ) -> Option<String> {
        let barrier = self.barriers.0.get(id)?;
        let roster = self.known_roster()?;
        let live = |c: &String| !failed.contains_key(c) && !self.cleared.contains(c);
        match parties {
            Parties::Role(role) => roster
                .iter()
                .filter(|(c, r)| *r == role && !barrier.arrived.contains_key(*c))
                .find(|(c, _)| failed.contains_key(*c))
                .map(|(c, _)| format!("member {} failed: {}", quoted(c), bounded(&failed[c]))),
            Parties::Count(n) => {
                let can_come = roster
                    .keys()
                    .filter(|c| live(c) && !barrier.arrived.contains_key(*c))
                    .count();
                let possible = barrier.arrived.len() + can_come;
                (possible < *n as usize).then(|| {
                    let failed: Vec<String> = failed
                        .iter()
                        .map(|(c, r)| format!("{} ({})", quoted(c), bounded(r)))
                        .collect();
                    format!(
                        "barrier {} needs {n} members and only {possible} can still arrive \
                         (failed: {})",
                        quoted(id),
                        failed.join(", ")
                    )
                })
            }
        }
    }

    /// Who a wait at barrier `id` waits for, in words.
    pub(super) fn barrier_waits_on(&self, id: &str, parties: &Parties) -> String {
        let arrived = self
            .barriers
            .0
            .get(id)
            .map(|b| b.arrived.len())
            .unwrap_or(0);
        match parties {
            Parties::Count(n) => format!("{arrived} of {n} arrived"),
            Parties::Role(role) => {
                let missing: Vec<&str> = self
                    .known_roster()
                    .map(|r| {
                        r.iter()
                            .filter(|(c, rr)| {
                                *rr == role
                                    && !self
                                        .barriers
                                        .0
                                        .get(id)
                                        .is_some_and(|b| b.arrived.contains_key(*c))
                            })
                            .map(|(c, _)| c.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                format!("missing: {}", missing.join(", "))
            }
        }
    }
}
