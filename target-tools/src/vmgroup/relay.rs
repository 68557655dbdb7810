//! LAVA's MultiNode API relayed from a VM's console to the coordinator, as LAVA's dispatcher
//! relays it: each call the guest prints is made in the VM's name, and the reply line is
//! typed back. One worker per VM takes the calls in the order they were printed (a guest's
//! `lava-send` has no reply, and the `lava-wait` after it must not overtake it).

use std::sync::mpsc::{Receiver, Sender};

use lava_protocol::console::Call;
use lava_protocol::RequestKind;
use serde_json::Value;

use crate::error::Error;
use crate::wait::Session;

/// What a relayed call came to.
#[derive(Debug)]
pub struct Relayed {
    pub call: Call,
    /// The line to type back (`None` for a send, which LAVA answers with nothing).
    pub reply: Option<String>,
    /// Why the coordinator refused or could not be reached, if it did not answer.
    pub error: Option<Error>,
}

/// Makes one call in the name of `session`'s member.
pub fn relay(session: &Session, call: Call) -> Relayed {
    let group = &session.group;
    let outcome: Result<Value, Error> = match &call {
        Call::Send { id, message } => session
            .call(RequestKind::Send {
                id: id.clone(),
                message: Value::Object(message.clone()),
            })
            .map(|_| Value::Null),
        Call::Wait { id } => session
            .wait(
                RequestKind::Wait { id: id.clone() },
                &format!("message {id:?} from any member of group {group:?}"),
            )
            .map(|r| r.message.unwrap_or(Value::Null)),
        Call::WaitAll { id, role } => session
            .wait(
                RequestKind::WaitAll {
                    id: id.clone(),
                    role: role.clone(),
                },
                &format!("message {id:?} from every member of group {group:?}"),
            )
            .map(|r| r.message.unwrap_or(Value::Null)),
        Call::Sync { id } => session
            .wait(
                RequestKind::Sync {
                    id: id.clone(),
                    message: Value::Null,
                },
                &format!("every member of group {group:?} to sync on {id:?}"),
            )
            .map(|_| Value::Null),
        Call::Fail { reason } => crate::commands::fail::fail(session, reason).map(|()| Value::Null),
    };
    let (data, error) = match outcome {
        Ok(data) => (Some(data), None),
        Err(e) => (None, Some(e)),
    };
    Relayed {
        reply: call.has_reply().then(|| call.reply_line(data.as_ref())),
        call,
        error,
    }
}

/// Relays calls from `calls` one after another, sending each outcome to `done` (wrapped by
/// `wrap`), until `calls` closes.
pub fn worker<E: Send + 'static>(
    session: impl Fn() -> Session + Send + 'static,
    calls: Receiver<Call>,
    done: Sender<E>,
    wrap: impl Fn(Relayed) -> E + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for call in calls {
            if done.send(wrap(relay(&session(), call))).is_err() {
                return;
            }
        }
    })
}
