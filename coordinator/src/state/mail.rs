//! Messages to one member and queues.
//!
//! `send_to` leaves data under an id for one member only: its `lava_wait` and `wait_any` on
//! the id see it beside what was sent to everyone (a sender's data to it replaces that
//! sender's earlier data, as `lava_send` does); nobody else's waits do. `enqueue` appends an
//! entry to a queue (for one member, when `to` is given), and `consume` takes the oldest entry
//! the member may take, waiting for one: each entry is taken once, for work distribution.
//! Everything is kept in the group's stored row; a consumer's retry (same `request_id`) gets
//! the entry it took again, so an answer lost to a reset or a restart loses no entry.

use std::collections::{BTreeMap, VecDeque};

use indexmap::IndexMap;
use lava_protocol::{Reply, Request, RequestKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::group::value_bytes;
use super::{quoted, Group};

/// One queue entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub data: Value,
}

impl Queued {
    fn bytes(&self) -> usize {
        self.sender.len() + self.to.as_deref().map_or(0, str::len) + value_bytes(&self.data)
    }
}

/// The last entry a member took with a call that named itself (`request_id`): its retry is
/// answered with it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    pub request_id: String,
    pub id: String,
    pub reply: Value,
}

impl Taken {
    fn bytes(&self) -> usize {
        self.request_id.len() + self.id.len() + value_bytes(&self.reply)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    /// recipient -> id -> sender -> data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    direct: BTreeMap<String, BTreeMap<String, IndexMap<String, Value>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    queues: BTreeMap<String, VecDeque<Queued>>,
    /// member -> the last entry it took (see [`Taken`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    taken: BTreeMap<String, Taken>,
}

impl Mail {
    pub fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.queues.is_empty() && self.taken.is_empty()
    }

    /// Ids kept (they count against `max_ids_per_group`): each recipient's ids, and queues.
    pub fn ids(&self) -> usize {
        self.direct.values().map(BTreeMap::len).sum::<usize>() + self.queues.len()
    }

    pub fn bytes(&self) -> usize {
        let direct: usize = self
            .direct
            .iter()
            .flat_map(|(to, ids)| ids.iter().map(move |(id, senders)| (to, id, senders)))
            .flat_map(|(to, id, senders)| {
                senders.iter().map(move |(s, d)| direct_bytes(to, id, s, d))
            })
            .sum();
        let queues: usize = self
            .queues
            .iter()
            .map(|(id, q)| id.len() + q.iter().map(Queued::bytes).sum::<usize>())
            .sum();
        let taken: usize = self.taken.iter().map(|(c, t)| c.len() + t.bytes()).sum();
        direct + queues + taken
    }

    /// What was sent to `client` alone under `id`, if anything.
    pub fn to(&self, client: &str, id: &str) -> Option<&IndexMap<String, Value>> {
        self.direct.get(client)?.get(id)
    }

    /// The status view: `{"direct": {TO: {ID: [senders]}}, "queues": {ID: entries}}`.
    pub fn status(&self) -> Value {
        let direct: Map<String, Value> = self
            .direct
            .iter()
            .map(|(to, ids)| {
                let ids: Map<String, Value> = ids
                    .iter()
                    .map(|(id, senders)| (id.clone(), json!(senders.keys().collect::<Vec<_>>())))
                    .collect();
                (to.clone(), Value::Object(ids))
            })
            .collect();
        let queues: Map<String, Value> = self
            .queues
            .iter()
            .map(|(id, q)| (id.clone(), q.len().into()))
            .collect();
        json!({"direct": direct, "queues": queues})
    }
}

fn direct_bytes(to: &str, id: &str, sender: &str, data: &Value) -> usize {
    to.len() + id.len() + sender.len() + value_bytes(data)
}

impl Group {
    /// Why `to` can get nothing: the group's members are known and it is not one.
    pub(super) fn not_a_member(&self, to: &str) -> Option<String> {
        let roster = self.known_roster()?;
        (!roster.contains_key(to)).then(|| {
            format!(
                "client {} is not a member of group {}",
                quoted(to),
                quoted(&self.name)
            )
        })
    }

    /// The bytes a mail request makes the group keep (0 for others), or why it is refused.
    pub(super) fn mail_growth(&self, req: &Request) -> Result<(usize, bool), String> {
        let sender = req.client_name.as_str();
        match &req.kind {
            RequestKind::SendTo { to, id, message } => {
                if let Some(why) = self.not_a_member(to) {
                    return Err(why);
                }
                let old = self.mail.to(to, id);
                let replaced = old
                    .and_then(|m| m.get(sender))
                    .map_or(0, |d| direct_bytes(to, id, sender, d));
                let grow = direct_bytes(to, id, sender, message).saturating_sub(replaced);
                Ok((grow, old.is_none()))
            }
            RequestKind::Enqueue { id, to, message } => {
                if let Some(why) = to.as_deref().and_then(|to| self.not_a_member(to)) {
                    return Err(why);
                }
                let fresh = !self.mail.queues.contains_key(id);
                let entry = Queued {
                    sender: sender.to_owned(),
                    to: to.clone(),
                    data: message.clone(),
                };
                Ok((entry.bytes() + if fresh { id.len() } else { 0 }, fresh))
            }
            // The reply kept for a retry: at most what the entry taken held.
            _ => Ok((0, false)),
        }
    }

    /// Stores `data` from `sender` for `to` alone under `id` (admitted).
    pub(super) fn send_to(&mut self, sender: &str, to: &str, id: &str, data: Value) {
        let new = direct_bytes(to, id, sender, &data);
        let old = self
            .mail
            .direct
            .entry(to.to_owned())
            .or_default()
            .entry(id.to_owned())
            .or_default()
            .insert(sender.to_owned(), data);
        self.meta_bytes =
            self.meta_bytes + new - old.map_or(0, |d| direct_bytes(to, id, sender, &d));
        self.dirty_meta = true;
    }

    pub(super) fn enqueue(&mut self, sender: &str, id: &str, to: Option<&str>, data: Value) {
        let entry = Queued {
            sender: sender.to_owned(),
            to: to.map(str::to_owned),
            data,
        };
        if !self.mail.queues.contains_key(id) {
            self.meta_bytes += id.len();
        }
        self.meta_bytes += entry.bytes();
        self.mail
            .queues
            .entry(id.to_owned())
            .or_default()
            .push_back(entry);
        self.dirty_meta = true;
    }

    /// The answer to a retry of a `consume` that took an entry already.
    pub(super) fn retried_consume(&self, req: &Request) -> Option<Reply> {
        let (RequestKind::Consume { id }, Some(call)) = (&req.kind, &req.request_id) else {
            return None;
        };
        let taken = self.mail.taken.get(&req.client_name)?;
        (taken.request_id == *call && taken.id == *id)
            .then(|| Reply::ack_message(taken.reply.clone()))
    }

    /// Takes the oldest entry of queue `id` that `client` may take: `{sender: data}`.
    /// `request_id`: the taking call's, kept with the entry for its retry.
    pub(super) fn consume(
        &mut self,
        client: &str,
        id: &str,
        request_id: Option<&str>,
    ) -> Option<Reply> {
        let queue = self.mail.queues.get_mut(id)?;
        let i = queue
            .iter()
            .position(|e| e.to.as_deref().is_none_or(|to| to == client))?;
        let entry = queue.remove(i)?;
        self.meta_bytes -= entry.bytes();
        if queue.is_empty() {
            self.mail.queues.remove(id);
            self.meta_bytes -= id.len();
        }
        let reply = json!({ entry.sender: entry.data });
        if let Some(call) = request_id {
            let taken = Taken {
                request_id: call.to_owned(),
                id: id.to_owned(),
                reply: reply.clone(),
            };
            self.meta_bytes += client.len() + taken.bytes();
            if let Some(old) = self.mail.taken.insert(client.to_owned(), taken) {
                self.meta_bytes -= client.len() + old.bytes();
            }
        }
        self.dirty_meta = true;
        Some(Reply::ack_message(reply))
    }
}
