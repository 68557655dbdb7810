//! Typed requests and replies, and their JSON field names.
//!
//! Requests are parsed leniently where LAVA's peers are (unknown fields are ignored,
//! informational fields are not checked) and strictly where a wrong value would change the
//! outcome: every such problem is a [`RequestError`] that the coordinator answers with `nack`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json::to_ascii_string;

/// Client name -> role, in the order the coordinator reports it.
pub type Roles = IndexMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub group_name: String,
    pub client_name: String,
    /// The sender's own role; needed when the request registers the client.
    pub role: Option<String>,
    pub hostname: Option<String>,
    /// Needed by the request that creates the group.
    pub group_size: Option<u32>,
    /// Extension: hold the connection up to this many seconds instead of answering `wait`.
    pub block: Option<f64>,
    /// Extension: while this call waits, its member promises to ask again within this many
    /// seconds of each `wait`; past that it counts as gone (a killed tool).
    pub lease: Option<f64>,
    /// Extension: identifies one logical call across its retries, so that a retried
    /// `lava_sync` whose `ack` was lost is answered again instead of starting the next round.
    pub request_id: Option<String>,
    /// Extension: the lab's shared secret, where the coordinator requires one.
    pub secret: Option<String>,
    /// Extension: the group's secret; the request that creates a group may set it, and
    /// every later request to the group must then carry it.
    pub group_secret: Option<String>,
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    GroupData,
    Send {
        id: String,
        message: Value,
    },
    Wait {
        id: String,
    },
    WaitAll {
        id: String,
        role: Option<String>,
    },
    /// Extension: wait until any of `ids` has been sent (by a member of `role`); the reply
    /// names the id.
    WaitAny {
        ids: Vec<String>,
        role: Option<String>,
    },
    Sync {
        id: String,
        message: Value,
    },
    ClearGroup,
    Complete,
    Aggregate,
    /// Extension: declare every member (client -> role) before they register.
    DeclareRoster {
        roster: Roles,
    },
    /// Extension: the roster, at once when declared, else once the group is complete.
    Roster,
    /// Extension: open the VM start gate (`lava_send lava_vm_start host_ip=...`).
    VmStart {
        host_ip: String,
    },
    /// Extension: wait for the VM start gate (`lava_wait lava_vm_start`).
    VmWaitStart,
    /// Extension: this node is done (`lava_send lava_vm_stop status=... reason=...`).
    VmStop {
        status: VmStatus,
        reason: Option<String>,
    },
    /// Extension: wait until every member sent `lava_vm_stop` (`lava_wait_all lava_vm_stop`).
    VmWaitAll,
    /// Extension: this member failed; what waits on it is answered `nack` naming it.
    Fail {
        reason: String,
    },
    /// Extension: data for one member only: its waits on `id` see it, nobody else's do.
    SendTo {
        to: String,
        id: String,
        message: Value,
    },
    /// Extension: append to queue `id` (for member `to` only, when given); each entry is
    /// taken by one `Consume`.
    Enqueue {
        id: String,
        to: Option<String>,
        message: Value,
    },
    /// Extension: wait for the oldest entry of queue `id` this member may take, and take it.
    Consume {
        id: String,
    },
    /// Extension: a reusable barrier on part of the group: released, round after round,
    /// once every member of a role, or a number of members, arrived.
    Barrier {
        id: String,
        parties: Parties,
    },
    /// Extension: whose failures end this member's waits: the members of `roles` only
    /// (none: nobody's), or everybody's again (`None`, the default).
    FailureScope {
        roles: Option<Vec<String>>,
    },
    /// Extension: the lab's operator acts on the group (`lava-coordinator unblock|fail|send`);
    /// only with the lab secret. `client_name` names the operator (for the log).
    Operator {
        action: OperatorAction,
    },
    /// Extension: take lock `name` (one of its `count` places); `wait` while it is full.
    Lock {
        name: String,
        count: u32,
        scope: LockScope,
    },
    /// Extension: give back lock `name`, which the sender holds.
    Unlock {
        name: String,
        scope: LockScope,
    },
}

/// What the operator does to a group.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorAction {
    /// Answers every held request of the group (`nack`, naming the operator and `reason`).
    Unblock { reason: Option<String> },
    /// Member `client` failed, as if it had sent `fail`.
    Fail { client: String, reason: String },
    /// Data under `id`, sent in member `sender`'s name (`None`: as `operator`).
    Send {
        id: String,
        message: Value,
        sender: Option<String>,
    },
}

impl OperatorAction {
    pub fn name(&self) -> &'static str {
        match self {
            OperatorAction::Unblock { .. } => "unblock",
            OperatorAction::Fail { .. } => "fail",
            OperatorAction::Send { .. } => "send",
        }
    }
}

/// Who a barrier waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parties {
    /// Every member of the role.
    Role(String),
    /// This many members, whoever they are.
    Count(u32),
}

/// Whose lock a name means: the group's own, or the lab's (shared by every group, where the
/// coordinator allows it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    #[default]
    Group,
    Lab,
}

impl LockScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LockScope::Group => "group",
            LockScope::Lab => "lab",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStatus {
    Ok,
    Failed,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Ok => "ok",
            VmStatus::Failed => "failed",
        }
    }
}

impl RequestKind {
    /// Every kind's `request` field value, in the order of [`RequestKind::index`] (the
    /// coordinator's metrics count by it).
    pub const NAMES: [&'static str; 24] = [
        "group_data",
        "lava_send",
        "lava_wait",
        "lava_wait_all",
        "wait_any",
        "lava_sync",
        "clear_group",
        "complete",
        "aggregate",
        "declare_roster",
        "roster",
        "vm_start",
        "vm_wait_start",
        "vm_stop",
        "vm_wait_all",
        "fail",
        "send_to",
        "enqueue",
        "consume",
        "barrier",
        "failure_scope",
        "operator",
        "lock",
        "unlock",
    ];

    /// The kind's place in [`RequestKind::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            RequestKind::GroupData => 0,
            RequestKind::Send { .. } => 1,
            RequestKind::Wait { .. } => 2,
            RequestKind::WaitAll { .. } => 3,
            RequestKind::WaitAny { .. } => 4,
            RequestKind::Sync { .. } => 5,
            RequestKind::ClearGroup => 6,
            RequestKind::Complete => 7,
            RequestKind::Aggregate => 8,
            RequestKind::DeclareRoster { .. } => 9,
            RequestKind::Roster => 10,
            RequestKind::VmStart { .. } => 11,
            RequestKind::VmWaitStart => 12,
            RequestKind::VmStop { .. } => 13,
            RequestKind::VmWaitAll => 14,
            RequestKind::Fail { .. } => 15,
            RequestKind::SendTo { .. } => 16,
            RequestKind::Enqueue { .. } => 17,
            RequestKind::Consume { .. } => 18,
            RequestKind::Barrier { .. } => 19,
            RequestKind::FailureScope { .. } => 20,
            RequestKind::Operator { .. } => 21,
            RequestKind::Lock { .. } => 22,
            RequestKind::Unlock { .. } => 23,
        }
    }

    /// The `request` field's value.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown request {0:?}")]
    Unknown(String),
    #[error("field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The deepest `message` a request may carry. The store wraps a message in a few levels of its
/// own and serde_json reads back at most 128, so an accepted message must stay well below that
/// (LAVA's messages are flat `key: value` objects: depth 1).
pub const MAX_MESSAGE_DEPTH: usize = 32;

/// Nesting depth of a JSON value: 0 for a scalar, 1 for a flat object or array.
fn depth(value: &Value) -> usize {
    // Iterative, so that no input can exhaust the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

fn string(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn required(obj: &Map<String, Value>, field: &'static str) -> Result<String, RequestError> {
    string(obj, field)?.ok_or(RequestError::Missing(field))
}

/// A name that identifies something: LAVA refuses empty ones.
fn non_empty(obj: &Map<String, Value>, field: &'static str) -> Result<String, RequestError> {
    let value = required(obj, field)?;
    if value.is_empty() {
        return Err(RequestError::Invalid {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(value)
}

/// `group_size` as LAVA's coordinator reads it (`int(x)`): a number or a numeric string.
/// Zero means "not given", as in LAVA.
fn group_size(obj: &Map<String, Value>) -> Result<Option<u32>, RequestError> {
    let wrong = || RequestError::WrongType {
        field: "group_size",
        expected: "a whole number from 0 to 4294967295",
    };
    let n = match obj.get("group_size") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(wrong)?,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| wrong())?,
        Some(_) => return Err(wrong()),
    };
    let n = u32::try_from(n).map_err(|_| wrong())?;
    Ok((n > 0).then_some(n))
}

/// A number of seconds, 0 or more (`block`, `lease`).
fn seconds(obj: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, RequestError> {
    let wrong = RequestError::WrongType {
        field,
        expected: "a number of seconds, 0 or more",
    };
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(Some(s)),
            _ => Err(wrong),
        },
        Some(_) => Err(wrong),
    }
}

/// `messageIDs`: a list of one or more message ids.
fn message_ids(obj: &Map<String, Value>) -> Result<Vec<String>, RequestError> {
    let wrong = RequestError::WrongType {
        field: "messageIDs",
        expected: "a list of one or more message id strings",
    };
    match obj.get("messageIDs") {
        None | Some(Value::Null) => Err(RequestError::Missing("messageIDs")),
        Some(Value::Array(ids)) if !ids.is_empty() => ids
            .iter()
            .map(|id| match id {
                Value::String(id) => Ok(id.clone()),
                _ => Err(wrong.clone()),
            })
            .collect(),
        Some(_) => Err(wrong),
    }
}

/// A lock's `count`: how many may hold it at once, 1 when absent.
fn lock_count(obj: &Map<String, Value>) -> Result<u32, RequestError> {
    match obj.get("count") {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Ok(n),
            _ => Err(RequestError::WrongType {
                field: "count",
                expected: "a whole number from 1 to 4294967295",
            }),
        },
        Some(_) => Err(RequestError::WrongType {
            field: "count",
            expected: "a whole number from 1 to 4294967295",
        }),
    }
}

/// A lock's `scope`: `group` when absent.
fn lock_scope(obj: &Map<String, Value>) -> Result<LockScope, RequestError> {
    match string(obj, "scope")?.as_deref() {
        None | Some("group") => Ok(LockScope::Group),
        Some("lab") => Ok(LockScope::Lab),
        Some(other) => Err(RequestError::Invalid {
            field: "scope",
            reason: format!("{other:?} is neither \"group\" nor \"lab\""),
        }),
    }
}

fn roster(obj: &Map<String, Value>) -> Result<Roles, RequestError> {
    let wrong = RequestError::WrongType {
        field: "roster",
        expected: "an object of client name -> role strings",
    };
    let Some(Value::Object(map)) = obj.get("roster") else {
        return Err(match obj.get("roster") {
            None | Some(Value::Null) => RequestError::Missing("roster"),
            Some(_) => wrong,
        });
    };
    map.iter()
        .map(|(client, role)| match role {
            Value::String(r) => Ok((client.clone(), r.clone())),
            _ => Err(wrong.clone()),
        })
        .collect()
}

impl Request {
    /// A request of `kind` from `client_name` (role `role`) in `group_name`.
    pub fn new(group_name: &str, client_name: &str, role: &str, kind: RequestKind) -> Self {
        Request {
            group_name: group_name.to_owned(),
            client_name: client_name.to_owned(),
            role: Some(role.to_owned()),
            hostname: None,
            group_size: None,
            block: None,
            lease: None,
            request_id: None,
            secret: None,
            group_secret: None,
            kind,
        }
    }

    /// Parses a request body.
    pub fn parse(body: &str) -> Result<Self, RequestError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Self, RequestError> {
        let obj = value.as_object().ok_or(RequestError::NotObject)?;
        let request = required(obj, "request")?;
        let id = || required(obj, "messageID");
        // LAVA stores a missing or null message as an empty object.
        let message = || match obj.get("message") {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(v) if depth(v) > MAX_MESSAGE_DEPTH => Err(RequestError::Invalid {
                field: "message",
                reason: format!("nests deeper than {MAX_MESSAGE_DEPTH} levels"),
            }),
            Some(v) => Ok(v.clone()),
        };
        let kind = match request.as_str() {
            "group_data" => RequestKind::GroupData,
            "lava_send" => RequestKind::Send {
                id: id()?,
                message: message()?,
            },
            "lava_wait" => RequestKind::Wait { id: id()? },
            "lava_wait_all" => RequestKind::WaitAll {
                id: id()?,
                role: string(obj, "waitrole")?,
            },
            "wait_any" => RequestKind::WaitAny {
                ids: message_ids(obj)?,
                role: string(obj, "waitrole")?,
            },
            "lava_sync" => RequestKind::Sync {
                id: id()?,
                message: message()?,
            },
            "clear_group" => RequestKind::ClearGroup,
            "complete" => RequestKind::Complete,
            "aggregate" => RequestKind::Aggregate,
            "declare_roster" => RequestKind::DeclareRoster {
                roster: roster(obj)?,
            },
            "roster" => RequestKind::Roster,
            "vm_start" => RequestKind::VmStart {
                host_ip: required(obj, "host_ip")?,
            },
            "vm_wait_start" => RequestKind::VmWaitStart,
            "vm_stop" => RequestKind::VmStop {
                status: match string(obj, "status")?.as_deref() {
                    None | Some("ok") => VmStatus::Ok,
                    Some("failed") => VmStatus::Failed,
                    Some(other) => {
                        return Err(RequestError::Invalid {
                            field: "status",
                            reason: format!("{other:?} is neither \"ok\" nor \"failed\""),
                        })
                    }
                },
                reason: string(obj, "reason")?,
            },
            "vm_wait_all" => RequestKind::VmWaitAll,
            "fail" => RequestKind::Fail {
                reason: string(obj, "reason")?.unwrap_or_default(),
            },
            "send_to" => RequestKind::SendTo {
                to: non_empty(obj, "to")?,
                id: id()?,
                message: message()?,
            },
            "enqueue" => RequestKind::Enqueue {
                id: id()?,
                to: match string(obj, "to")? {
                    Some(to) if to.is_empty() => {
                        return Err(RequestError::Invalid {
                            field: "to",
                            reason: "must not be empty".into(),
                        })
                    }
                    to => to,
                },
                message: message()?,
            },
            "consume" => RequestKind::Consume { id: id()? },
            "barrier" => RequestKind::Barrier {
                id: id()?,
                parties: match (string(obj, "waitrole")?, obj.get("count")) {
                    (Some(role), None) => Parties::Role(role),
                    (None, Some(_)) => Parties::Count(lock_count(obj)?),
                    _ => {
                        return Err(RequestError::Invalid {
                            field: "waitrole",
                            reason: "a barrier needs either `waitrole` or `count`".into(),
                        })
                    }
                },
            },
            "failure_scope" => RequestKind::FailureScope {
                roles: match obj.get("roles") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(roles)) => Some(
                        roles
                            .iter()
                            .map(|r| match r {
                                Value::String(r) if !r.is_empty() => Ok(r.clone()),
                                _ => Err(RequestError::WrongType {
                                    field: "roles",
                                    expected: "a list of role names",
                                }),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Some(_) => {
                        return Err(RequestError::WrongType {
                            field: "roles",
                            expected: "a list of role names",
                        })
                    }
                },
            },
            "operator" => RequestKind::Operator {
                action: match required(obj, "action")?.as_str() {
                    "unblock" => OperatorAction::Unblock {
                        reason: string(obj, "reason")?,
                    },
                    "fail" => OperatorAction::Fail {
                        client: non_empty(obj, "client")?,
                        reason: string(obj, "reason")?.unwrap_or_default(),
                    },
                    "send" => OperatorAction::Send {
                        id: id()?,
                        message: message()?,
                        sender: string(obj, "client")?,
                    },
                    other => {
                        return Err(RequestError::Invalid {
                            field: "action",
                            reason: format!("{other:?} is not unblock, fail or send"),
                        })
                    }
                },
            },
            "lock" => RequestKind::Lock {
                name: non_empty(obj, "lock")?,
                count: lock_count(obj)?,
                scope: lock_scope(obj)?,
            },
            "unlock" => RequestKind::Unlock {
                name: non_empty(obj, "lock")?,
                scope: lock_scope(obj)?,
            },
            other => return Err(RequestError::Unknown(other.to_owned())),
        };
        Ok(Request {
            group_name: non_empty(obj, "group_name")?,
            client_name: non_empty(obj, "client_name")?,
            role: string(obj, "role")?,
            hostname: string(obj, "hostname")?,
            group_size: group_size(obj)?,
            block: seconds(obj, "block")?,
            lease: seconds(obj, "lease")?,
            request_id: string(obj, "request_id")?,
            secret: string(obj, "secret")?,
            group_secret: string(obj, "group_secret")?,
            kind,
        })
    }

    /// The request as a JSON object with LAVA's field names.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("request".into(), self.kind.name().into());
        obj.insert("group_name".into(), self.group_name.clone().into());
        obj.insert("client_name".into(), self.client_name.clone().into());
        if let Some(role) = &self.role {
            obj.insert("role".into(), role.clone().into());
        }
        if let Some(hostname) = &self.hostname {
            obj.insert("hostname".into(), hostname.clone().into());
        }
        if let Some(size) = self.group_size {
            obj.insert("group_size".into(), size.into());
        }
        if let Some(block) = self.block {
            obj.insert("block".into(), block.into());
        }
        if let Some(lease) = self.lease {
            obj.insert("lease".into(), lease.into());
        }
        for (field, value) in [
            ("request_id", &self.request_id),
            ("secret", &self.secret),
            ("group_secret", &self.group_secret),
        ] {
            if let Some(value) = value {
                obj.insert(field.into(), value.clone().into());
            }
        }
        match &self.kind {
            RequestKind::Send { id, message } | RequestKind::Sync { id, message } => {
                obj.insert("messageID".into(), id.clone().into());
                obj.insert("message".into(), message.clone());
            }
            RequestKind::Wait { id } => {
                obj.insert("messageID".into(), id.clone().into());
            }
            RequestKind::WaitAll { id, role } => {
                obj.insert("messageID".into(), id.clone().into());
                if let Some(role) = role {
                    obj.insert("waitrole".into(), role.clone().into());
                }
            }
            RequestKind::DeclareRoster { roster } => {
                let map = roster
                    .iter()
                    .map(|(c, r)| (c.clone(), Value::from(r.clone())))
                    .collect();
                obj.insert("roster".into(), Value::Object(map));
            }
            RequestKind::VmStart { host_ip } => {
                obj.insert("host_ip".into(), host_ip.clone().into());
            }
            RequestKind::Fail { reason } => {
                obj.insert("reason".into(), reason.clone().into());
            }
            RequestKind::SendTo { to, id, message } => {
                obj.insert("to".into(), to.clone().into());
                obj.insert("messageID".into(), id.clone().into());
                obj.insert("message".into(), message.clone());
            }
            RequestKind::Enqueue { id, to, message } => {
                obj.insert("messageID".into(), id.clone().into());
                if let Some(to) = to {
                    obj.insert("to".into(), to.clone().into());
                }
                obj.insert("message".into(), message.clone());
            }
            RequestKind::Consume { id } => {
                obj.insert("messageID".into(), id.clone().into());
            }
            RequestKind::Operator { action } => {
                obj.insert("action".into(), action.name().into());
                match action {
                    OperatorAction::Unblock { reason } => {
                        if let Some(reason) = reason {
                            obj.insert("reason".into(), reason.clone().into());
                        }
                    }
                    OperatorAction::Fail { client, reason } => {
                        obj.insert("client".into(), client.clone().into());
                        obj.insert("reason".into(), reason.clone().into());
                    }
                    OperatorAction::Send {
                        id,
                        message,
                        sender,
                    } => {
                        obj.insert("messageID".into(), id.clone().into());
                        obj.insert("message".into(), message.clone());
                        if let Some(sender) = sender {
                            obj.insert("client".into(), sender.clone().into());
                        }
                    }
                }
            }
            RequestKind::FailureScope { roles } => {
                obj.insert(
                    "roles".into(),
                    roles.clone().map_or(Value::Null, Value::from),
                );
            }
            RequestKind::Barrier { id, parties } => {
                obj.insert("messageID".into(), id.clone().into());
                match parties {
                    Parties::Role(role) => obj.insert("waitrole".into(), role.clone().into()),
                    Parties::Count(n) => obj.insert("count".into(), (*n).into()),
                };
            }
            RequestKind::WaitAny { ids, role } => {
                obj.insert("messageIDs".into(), ids.clone().into());
                if let Some(role) = role {
                    obj.insert("waitrole".into(), role.clone().into());
                }
            }
            RequestKind::Lock { name, count, scope } => {
                obj.insert("lock".into(), name.clone().into());
                obj.insert("count".into(), (*count).into());
                obj.insert("scope".into(), scope.as_str().into());
            }
            RequestKind::Unlock { name, scope } => {
                obj.insert("lock".into(), name.clone().into());
                obj.insert("scope".into(), scope.as_str().into());
            }
            RequestKind::VmStop { status, reason } => {
                obj.insert("status".into(), status.as_str().into());
                if let Some(reason) = reason {
                    obj.insert("reason".into(), reason.clone().into());
                }
            }
            RequestKind::GroupData
            | RequestKind::ClearGroup
            | RequestKind::Complete
            | RequestKind::Aggregate
            | RequestKind::Roster
            | RequestKind::VmWaitStart
            | RequestKind::VmWaitAll => {}
        }
        Value::Object(obj)
    }

    /// The request as JSON text (ASCII, as LAVA's dispatcher sends it).
    pub fn to_json(&self) -> String {
        to_ascii_string(&self.to_value())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Wait,
    Ack,
    Nack,
    GroupData,
    Roster,
}

/// A coordinator reply. Fields appear on the wire in this order and only when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub response: Response,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Roles>,
    /// Extension on `roster`: whether the roster was declared (else the group is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<bool>,
    /// Extension on `vm_wait_start`: the host's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Extension on `vm_wait_all`: members that reported `status=failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<String>>,
    /// Extension on the `ack` of `wait_any`: which id was sent.
    #[serde(default, rename = "messageID", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Extension on `nack`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    fn bare(response: Response) -> Self {
        Reply {
            response,
            message: None,
            roles: None,
            declared: None,
            host_ip: None,
            failed: None,
            message_id: None,
            error: None,
        }
    }

    pub fn wait() -> Self {
        Self::bare(Response::Wait)
    }

    pub fn ack() -> Self {
        Self::bare(Response::Ack)
    }

    pub fn ack_message(message: Value) -> Self {
        Reply {
            message: Some(message),
            ..Self::bare(Response::Ack)
        }
    }

    pub fn nack(error: impl Into<String>) -> Self {
        Reply {
            error: Some(error.into()),
            ..Self::bare(Response::Nack)
        }
    }

    pub fn group_data(roles: Roles) -> Self {
        Reply {
            roles: Some(roles),
            ..Self::bare(Response::GroupData)
        }
    }

    pub fn roster(roles: Roles, declared: bool) -> Self {
        Reply {
            roles: Some(roles),
            declared: Some(declared),
            ..Self::bare(Response::Roster)
        }
    }

    pub fn is_wait(&self) -> bool {
        self.response == Response::Wait
    }

    /// The reply as JSON text (ASCII, Python layout).
    pub fn to_json(&self) -> String {
        to_ascii_string(self)
    }

    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name in `NAMES` is one the parser knows, at the kind's own index.
    #[test]
    fn request_names_are_listed_once_and_parse_back() {
        for (i, name) in RequestKind::NAMES.iter().enumerate() {
            let body = serde_json::json!({"request": name, "group_name": "g", "client_name": "c"});
            match Request::parse(&body.to_string()) {
                Ok(r) => assert_eq!(r.kind.index(), i, "{name}"),
                Err(e) => assert!(!matches!(e, RequestError::Unknown(_)), "{name}: {e}"),
            }
        }
        let mut sorted = RequestKind::NAMES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), RequestKind::NAMES.len(), "no name twice");
    }
    use serde_json::json;

    fn parse(v: Value) -> Result<Request, RequestError> {
        Request::parse(&v.to_string())
    }

    #[test]
    fn parses_a_dispatcher_request() {
        let req = parse(json!({
            "request": "lava_send", "group_name": "g", "client_name": "10", "role": "server",
            "hostname": "h", "port": 3079, "blocksize": 4096, "poll_delay": 3, "host": "x",
            "messageID": "ready", "message": {"ip": "1.2.3.4"}
        }))
        .unwrap();
        assert_eq!(req.client_name, "10");
        assert_eq!(
            req.kind,
            RequestKind::Send {
                id: "ready".into(),
                message: json!({"ip": "1.2.3.4"})
            }
        );
    }

    #[test]
    fn null_or_missing_message_is_an_empty_object() {
        for body in [
            json!({"request": "lava_send", "group_name": "g", "client_name": "c", "messageID": "m"}),
            json!({"request": "lava_send", "group_name": "g", "client_name": "c", "messageID": "m", "message": null}),
        ] {
            let RequestKind::Send { message, .. } = parse(body).unwrap().kind else {
                panic!("not a send")
            };
            assert_eq!(message, json!({}));
        }
    }

    #[test]
    fn group_size_is_read_like_python_int() {
        let base = json!({"request": "group_data", "group_name": "g", "client_name": "c"});
        let with = |size: Value| {
            let mut v = base.clone();
            v["group_size"] = size;
            parse(v)
        };
        assert_eq!(with(json!(3)).unwrap().group_size, Some(3));
        assert_eq!(with(json!("4")).unwrap().group_size, Some(4));
        assert_eq!(with(json!(0)).unwrap().group_size, None);
        assert!(with(json!(-1)).is_err());
        assert!(with(json!(2.5)).is_err());
        assert!(with(json!("two")).is_err());
        assert!(with(json!([2])).is_err());
        assert!(with(json!(1u64 << 40)).is_err());
    }

    /// A message nested `levels` deep: `{"k": {"k": ... "v"}}`.
    pub(crate) fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("v"), |inner, _| json!({ "k": inner }))
    }

    #[test]
    fn messages_deeper_than_the_store_reads_back_are_refused() {
        for request in ["lava_send", "lava_sync"] {
            let with = |levels| {
                parse(
                    json!({"request": request, "group_name": "g", "client_name": "c",
                             "messageID": "m", "message": nested(levels)}),
                )
            };
            assert!(with(MAX_MESSAGE_DEPTH).is_ok());
            assert_eq!(
                with(MAX_MESSAGE_DEPTH + 1).unwrap_err(),
                RequestError::Invalid {
                    field: "message",
                    reason: format!("nests deeper than {MAX_MESSAGE_DEPTH} levels")
                }
            );
        }
        assert_eq!(depth(&json!([1, {"a": [2]}])), 3);
        assert_eq!(depth(&json!("flat")), 0);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(matches!(Request::parse("{"), Err(RequestError::NotJson(_))));
        assert!(matches!(Request::parse("42"), Err(RequestError::NotObject)));
        assert!(matches!(
            parse(json!({"group_name": "g", "client_name": "c"})),
            Err(RequestError::Missing("request"))
        ));
        assert!(matches!(
            parse(json!({"request": "lava_wait", "group_name": "g", "client_name": "c"})),
            Err(RequestError::Missing("messageID"))
        ));
        assert!(matches!(
            parse(json!({"request": "group_data", "client_name": "c"})),
            Err(RequestError::Missing("group_name"))
        ));
        assert!(matches!(
            parse(json!({"request": "group_data", "group_name": "", "client_name": "c"})),
            Err(RequestError::Invalid {
                field: "group_name",
                ..
            })
        ));
        assert!(matches!(
            parse(json!({"request": "group_data", "group_name": "g", "client_name": ""})),
            Err(RequestError::Invalid {
                field: "client_name",
                ..
            })
        ));
        assert!(matches!(
            parse(json!({"request": "group_data", "group_name": 1, "client_name": "c"})),
            Err(RequestError::WrongType {
                field: "group_name",
                ..
            })
        ));
        assert!(matches!(
            parse(json!({"request": "fly", "group_name": "g", "client_name": "c"})),
            Err(RequestError::Unknown(_))
        ));
        assert!(matches!(
            parse(
                json!({"request": "lava_wait", "group_name": "g", "client_name": "c", "messageID": "m", "block": -1})
            ),
            Err(RequestError::WrongType { field: "block", .. })
        ));
        assert!(matches!(
            parse(
                json!({"request": "vm_stop", "group_name": "g", "client_name": "c", "status": "meh"})
            ),
            Err(RequestError::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn a_barrier_needs_a_role_or_a_count() {
        let with = |extra: Value| {
            let mut v = json!({"request": "barrier", "group_name": "g", "client_name": "c",
                               "messageID": "b"});
            if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
                obj.extend(extra);
            }
            parse(v)
        };
        for bad in [json!({}), json!({"waitrole": "r", "count": 2})] {
            assert!(
                matches!(with(bad.clone()), Err(RequestError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            with(json!({"count": 0})),
            Err(RequestError::WrongType { field: "count", .. })
        ));
    }

    #[test]
    fn wait_any_needs_a_list_of_ids() {
        let with = |ids: Value| {
            parse(
                json!({"request": "wait_any", "group_name": "g", "client_name": "c",
                         "messageIDs": ids}),
            )
        };
        assert_eq!(
            with(json!(["a", "b"])).unwrap().kind,
            RequestKind::WaitAny {
                ids: vec!["a".into(), "b".into()],
                role: None
            }
        );
        for bad in [json!([]), json!("a"), json!([1])] {
            assert!(
                matches!(
                    with(bad.clone()),
                    Err(RequestError::WrongType {
                        field: "messageIDs",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let mut reply = Reply::ack_message(json!({"a": {}}));
        reply.message_id = Some("ready".into());
        assert_eq!(
            reply.to_json(),
            r#"{"response": "ack", "message": {"a": {}}, "messageID": "ready"}"#
        );
    }

    #[test]
    fn lock_requests_default_to_one_place_in_the_group() {
        let lock = |extra: Value| {
            let mut v =
                json!({"request": "lock", "group_name": "g", "client_name": "c", "lock": "l"});
            if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
                obj.extend(extra);
            }
            parse(v)
        };
        assert_eq!(
            lock(json!({})).unwrap().kind,
            RequestKind::Lock {
                name: "l".into(),
                count: 1,
                scope: LockScope::Group
            }
        );
        assert!(matches!(
            lock(json!({"count": 0})),
            Err(RequestError::WrongType { field: "count", .. })
        ));
        assert!(matches!(
            lock(json!({"count": "2"})),
            Err(RequestError::WrongType { field: "count", .. })
        ));
        assert!(matches!(
            lock(json!({"scope": "world"})),
            Err(RequestError::Invalid { field: "scope", .. })
        ));
        assert!(matches!(
            lock(json!({"lock": ""})),
            Err(RequestError::Invalid { field: "lock", .. })
        ));
        assert!(matches!(
            parse(json!({"request": "unlock", "group_name": "g", "client_name": "c"})),
            Err(RequestError::Missing("lock"))
        ));
    }

    #[test]
    fn requests_round_trip() {
        let mut roster = Roles::new();
        roster.insert("host".into(), "host".into());
        roster.insert("vm1".into(), "server".into());
        let kinds = [
            RequestKind::GroupData,
            RequestKind::Send {
                id: "m".into(),
                message: json!({"k": "v é"}),
            },
            RequestKind::Wait { id: "m".into() },
            RequestKind::WaitAll {
                id: "m".into(),
                role: Some("r".into()),
            },
            RequestKind::WaitAll {
                id: "m".into(),
                role: None,
            },
            RequestKind::Sync {
                id: "s".into(),
                message: json!({}),
            },
            RequestKind::ClearGroup,
            RequestKind::Complete,
            RequestKind::Aggregate,
            RequestKind::DeclareRoster { roster },
            RequestKind::Roster,
            RequestKind::VmStart {
                host_ip: "10.0.2.2".into(),
            },
            RequestKind::VmWaitStart,
            RequestKind::VmStop {
                status: VmStatus::Failed,
                reason: Some("boom".into()),
            },
            RequestKind::VmWaitAll,
            RequestKind::Fail {
                reason: "disk full".into(),
            },
            RequestKind::WaitAny {
                ids: vec!["ready".into(), "failed".into()],
                role: Some("server".into()),
            },
            RequestKind::WaitAny {
                ids: vec!["ready".into()],
                role: None,
            },
            RequestKind::SendTo {
                to: "b".into(),
                id: "job".into(),
                message: json!({"k": "v"}),
            },
            RequestKind::Enqueue {
                id: "work".into(),
                to: Some("b".into()),
                message: json!({"n": "1"}),
            },
            RequestKind::Enqueue {
                id: "work".into(),
                to: None,
                message: json!({}),
            },
            RequestKind::Consume { id: "work".into() },
            RequestKind::Barrier {
                id: "b".into(),
                parties: Parties::Role("server".into()),
            },
            RequestKind::Barrier {
                id: "b".into(),
                parties: Parties::Count(3),
            },
            RequestKind::FailureScope {
                roles: Some(vec!["server".into()]),
            },
            RequestKind::FailureScope {
                roles: Some(Vec::new()),
            },
            RequestKind::FailureScope { roles: None },
            RequestKind::Operator {
                action: OperatorAction::Unblock {
                    reason: Some("stuck".into()),
                },
            },
            RequestKind::Operator {
                action: OperatorAction::Unblock { reason: None },
            },
            RequestKind::Operator {
                action: OperatorAction::Fail {
                    client: "c".into(),
                    reason: "dead".into(),
                },
            },
            RequestKind::Operator {
                action: OperatorAction::Send {
                    id: "go".into(),
                    message: json!({"k": "v"}),
                    sender: Some("c".into()),
                },
            },
            RequestKind::Lock {
                name: "dut-power".into(),
                count: 2,
                scope: LockScope::Lab,
            },
            RequestKind::Unlock {
                name: "dut-power".into(),
                scope: LockScope::Group,
            },
        ];
        for kind in kinds {
            let mut req = Request::new("g", "c", "r", kind);
            req.group_size = Some(3);
            req.block = Some(2.5);
            req.lease = Some(10.0);
            req.request_id = Some("host-1234-7".into());
            req.secret = Some("lab".into());
            req.group_secret = Some("grp".into());
            assert_eq!(Request::parse(&req.to_json()).unwrap(), req);
        }
    }

    #[test]
    fn replies_serialise_like_lava() {
        assert_eq!(Reply::wait().to_json(), r#"{"response": "wait"}"#);
        assert_eq!(
            Reply::ack_message(json!("sync-id")).to_json(),
            r#"{"response": "ack", "message": "sync-id"}"#
        );
        let mut roles = Roles::new();
        roles.insert("b".into(), "server".into());
        roles.insert("a".into(), "client".into());
        let text = Reply::group_data(roles).to_json();
        assert_eq!(
            text,
            r#"{"response": "group_data", "roles": {"b": "server", "a": "client"}}"#
        );
        assert_eq!(Reply::parse(&text).unwrap().response, Response::GroupData);
    }
}
