//! Any-of waits (`wait_any`): answered once any of several message ids has been sent (by a
//! member of a role, when one is given), naming the id. A script waits for `ready` or
//! `failed` in one call; `lava-wait-all ID ROLE --any` waits for any one member of a role.

use indexmap::IndexMap;
use lava_protocol::Reply;
use serde_json::Value;

use super::{bounded, quoted, Group};

impl Group {
    /// Whether `sender` counts for a wait limited to `role`.
    fn of_role(&self, sender: &str, role: Option<&str>) -> bool {
        role.is_none_or(|role| self.members.get(sender).is_some_and(|r| r == role))
    }

    /// The reply to a wait for any of `ids` (by a member of `role`): the first id in the
    /// caller's order that has a sender, with the data of its senders (of the role).
    pub(super) fn answer_any_sent(
        &self,
        client: &str,
        ids: &[String],
        role: Option<&str>,
    ) -> Option<Reply> {
        if let (Some(role), Some(roster)) = (role, self.known_roster()) {
            if !roster.values().any(|r| r == role) {
                return Some(Reply::nack(format!(
                    "no member of group {} has role {}",
                    quoted(&self.name),
                    quoted(role)
                )));
            }
        }
        ids.iter().find_map(|id| {
            let to_all = self.messages.get(id);
            let to_me = self.mail.to(client, id);
            let data: serde_json::Map<String, Value> = to_all
                .into_iter()
                .chain(to_me)
                .flatten()
                .filter(|(sender, _)| self.of_role(sender, role))
                .map(|(sender, data)| (sender.clone(), data.clone()))
                .collect();
            if data.is_empty() {
                return None;
            }
            let mut reply = Reply::ack_message(Value::Object(data));
            reply.message_id = Some(id.clone());
            Some(reply)
        })
    }

    /// Why nobody can send any of the ids any more: every member that could (of the role,
    /// other than the waiter) failed.
    /// `failed`: the failures that count for the waiter (its failure scope).
    pub(super) fn doomed_any(
        &self,
        client: &str,
        role: Option<&str>,
        failed: &IndexMap<String, String>,
    ) -> Option<String> {
        let roster = self.known_roster()?;
        let senders: Vec<&String> = roster
            .iter()
            .filter(|(c, r)| *c != client && role.is_none_or(|role| r.as_str() == role))
            .map(|(c, _)| c)
            .collect();
        if senders.is_empty() || !senders.iter().all(|c| failed.contains_key(*c)) {
            return None;
        }
        let names: Vec<String> = senders
            .iter()
            .map(|c| format!("{} ({})", quoted(c), bounded(&failed[*c])))
            .collect();
        Some(match role {
            Some(role) => format!(
                "every other member of role {} failed: {}",
                quoted(role),
                names.join(", ")
            ),
            None => format!("every other member failed: {}", names.join(", ")),
        })
    }
}

/// How a status view and a deadlock verdict name the wait.
pub(super) fn describe(ids: &[String], role: Option<&str>) -> String {
    let ids: Vec<String> = ids.iter().map(|id| bounded(id).into_owned()).collect();
    match role {
        Some(role) => format!("wait_any {} (role {})", ids.join(" "), bounded(role)),
        None => format!("wait_any {}", ids.join(" ")),
    }
}
