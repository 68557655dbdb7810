//! The lab operator's actions on a group (`operator`): answer its held requests (unblock),
//! declare a member failed, or send data in a member's name (or as `operator`). The server
//! lets them through only with the lab secret; every action is an event for the log.

use std::time::Instant;

use lava_protocol::{OperatorAction, Reply, Request};

use super::group::Change;
use super::{bounded, quoted, Coordinator, Event, Output, Wakeup};

/// The sender of what the operator sends in nobody's name.
pub const OPERATOR_SENDER: &str = "operator";

impl Coordinator {
    pub(super) fn operate(
        &mut self,
        req: &Request,
        action: &OperatorAction,
        now: Instant,
    ) -> Output {
        let mut out = Output::default();
        let name = req.group_name.as_str();
        let operator = bounded(&req.client_name).into_owned();
        let Some(group) = self.groups.get_mut(name) else {
            out.reply = Some(Reply::nack(format!("no group {}", quoted(name))));
            return out;
        };
        let is_member = |client: &str| {
            group.members.contains_key(client)
                || group
                    .roster
                    .as_ref()
                    .is_some_and(|r| r.contains_key(client))
        };
        let refuse = |why: String| Output {
            reply: Some(Reply::nack(why)),
            wakeups: Vec::new(),
        };
        let what = match action {
            OperatorAction::Unblock { reason } => {
                let why = format!(
                    "the operator {} unblocked group {}{}",
                    quoted(&operator),
                    quoted(name),
                    reason
                        .as_deref()
                        .map(|r| format!(": {}", bounded(r)))
                        .unwrap_or_default()
                );
                let parked = std::mem::take(&mut group.parked);
                for p in &parked {
                    group.answered(&p.client);
                }
                let answered = parked.len();
                for p in parked {
                    self.parked_in.remove(&p.waiter);
                    out.wakeups.push(Wakeup {
                        waiter: p.waiter,
                        reply: Reply::nack(why.clone()),
                    });
                }
                out.reply = Some(Reply::ack_message(
                    serde_json::json!({ "answered": answered }),
                ));
                format!("unblocked {answered} held requests")
            }
            OperatorAction::Fail { client, reason } => {
                if !self.verdicts.failure_propagation {
                    return refuse("failure propagation is turned off on this coordinator".into());
                }
                if !is_member(client) {
                    return refuse(format!(
                        "client {} is not a member of group {}",
                        quoted(client),
                        quoted(name)
                    ));
                }
                let reason = format!("{reason} (declared by the operator {operator})");
                group.fail(client, &reason);
                group.last_active = now;
                self.touched.insert(name.to_owned());
                let why = format!("{} failed: {}", quoted(client), bounded(&reason));
                out.wakeups.extend(self.free_places(name, client, &why));
                out.wakeups.extend(self.release(name, &Change::Failed));
                out.reply = Some(Reply::ack());
                format!("declared {} failed: {}", quoted(client), bounded(&reason))
            }
            OperatorAction::Send {
                id,
                message,
                sender,
            } => {
                let sender = sender.as_deref().unwrap_or(OPERATOR_SENDER);
                if sender != OPERATOR_SENDER && !is_member(sender) {
                    return refuse(format!(
                        "client {} is not a member of group {}",
                        quoted(sender),
                        quoted(name)
                    ));
                }
                let grow = id.len() + sender.len() + super::group::value_bytes(message);
                if group.stored_bytes() + grow > self.limits.max_group_bytes
                    || grow > self.limits.max_total_bytes.saturating_sub(self.total_bytes)
                {
                    return refuse(format!(
                        "group {} would store more than its limits allow",
                        quoted(name)
                    ));
                }
                group.send(sender, id, message.clone());
                group.last_active = now;
                self.touched.insert(name.to_owned());
                out.wakeups
                    .extend(self.release(name, &Change::Sent(id.clone())));
                out.reply = Some(Reply::ack());
                format!("sent {} as {}", quoted(id), quoted(sender))
            }
        };
        if self.verdicts.deadlock_detection {
            out.wakeups.extend(self.resolve_deadlock(name));
        }
        self.account(name);
        self.events.push(Event::Operator {
            group: bounded(name).into_owned(),
            operator,
            what,
        });
        out
    }
}
