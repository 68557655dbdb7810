//! What happened in each group, for the web view's timeline and `status --group`: the
//! requests with their answers, registrations, syncs completing, failures, verdicts and
//! clearings (`lava_protocol::timeline` is the format and the picture).
//!
//! Memory is bounded per group and in total: a group over its bound drops its oldest
//! events, counted in `dropped`; over the total, the histories of groups that are gone go
//! first (oldest gone first), then the appending group's own oldest events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use lava_protocol::timeline::{describe, duration_text, Entry, Log, Span, What};
use lava_protocol::{Reply, Request, RequestKind, Response};

use crate::state::{bounded, Event, Mutation};

/// Milliseconds since the Unix epoch, the history's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bytes an entry is counted for: its size plus its text.
fn entry_bytes(e: &Entry) -> usize {
    let text = match &e.what {
        What::Registered { client, role } => client.len() + role.len(),
        What::Request(s) => {
            // The open-request index holds the client, kind and id once more.
            2 * (s.client.len() + s.kind.len() + s.id.len())
                + s.detail.as_ref().map_or(0, String::len)
                + s.response.as_ref().map_or(0, String::len)
        }
        What::SyncComplete { id } => id.len(),
        What::Failed { client, reason } => client.len() + reason.len(),
        What::Verdict { text } => text.len(),
        What::Operator { operator, what } => operator.len() + what.len(),
        What::Created { .. } | What::Complete | What::Cleared | What::Expired => 0,
    };
    std::mem::size_of::<Entry>() + text
}

/// Which call a polling client's repeated asks belong to.
type CallKey = (String, String, String);

#[derive(Debug, Default)]
struct GroupLog {
    entries: VecDeque<Entry>,
    /// The `seq` of the next entry.
    next_seq: u64,
    dropped: u64,
    bytes: usize,
    /// Requests answered `wait` so far (or held), by call, to their entry's `seq`.
    open: HashMap<CallKey, u64>,
    /// The group's state is gone.
    ended: bool,
}

impl GroupLog {
    /// A log whose events are numbered from `base`.
    fn new(base: u64) -> Self {
        GroupLog {
            next_seq: base.saturating_sub(1),
            ..GroupLog::default()
        }
    }

    fn get(&self, seq: u64) -> Option<&Entry> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get_mut(i)
    }

    fn push(&mut self, at_ms: u64, what: What) -> u64 {
        self.next_seq += 1;
        let entry = Entry {
            seq: self.next_seq,
            at_ms,
            what,
        };
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
        self.next_seq
    }

    /// Drops the oldest entry; returns its bytes.
    fn drop_oldest(&mut self) -> usize {
        let Some(e) = self.entries.pop_front() else {
            return 0;
        };
        if let What::Request(s) = &e.what {
            if s.end_ms.is_none() {
                self.open.retain(|_, seq| *seq != e.seq);
            }
        }
        self.dropped += 1;
        let bytes = entry_bytes(&e);
        self.bytes -= bytes;
        bytes
    }

    fn log(&self, group: &str) -> Log {
        Log {
            group: group.to_owned(),
            dropped: self.dropped,
            ended: self.ended,
            events: self.entries.iter().cloned().collect(),
        }
    }
}

/// What a request did to its group, as the server saw it around the state machine.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The group existed before.
    pub known: bool,
    /// The group exists after.
    pub exists: bool,
    /// This request registered its client.
    pub registered: bool,
    /// This request created the group, of this size.
    pub created: Option<usize>,
}

/// What a request was asked for and how, before its answer is known.
pub struct Asked {
    group: String,
    /// The call, when it is (or may be) among the open ones.
    key: Option<CallKey>,
    seq: u64,
}

#[derive(Debug)]
pub struct History {
    groups: HashMap<String, GroupLog>,
    /// Groups whose state is gone, oldest first: their histories are dropped first.
    ended: VecDeque<String>,
    max_group_bytes: usize,
    max_total_bytes: usize,
    total_bytes: usize,
    /// The number the next new log starts from: events are numbered upwards across every
    /// log, so that a stored row is never reused by a later log of the same name.
    next_base: u64,
    /// Changes to store (only when `persist`): events written or changed, and per group the
    /// number below which its stored events are gone.
    persist: bool,
    dirty: Dirty,
    trims: HashMap<String, u64>,
}

/// A stored history row: the event, and how many were dropped before the log's first kept
/// event (read from the first row at a restart; rewritten whenever the first one drops).
#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    dropped: u64,
    entry: Entry,
}

#[derive(serde::Serialize)]
struct RowRef<'a> {
    dropped: u64,
    entry: &'a Entry,
}

/// A stored history row's text.
pub fn row_text(dropped: u64, entry: &Entry) -> String {
    serde_json::to_string(&RowRef { dropped, entry }).unwrap_or_default()
}

fn text(s: &str) -> String {
    bounded(s).into_owned()
}

fn call_id(kind: &RequestKind) -> std::borrow::Cow<'_, str> {
    match kind {
        RequestKind::Send { id, .. }
        | RequestKind::Wait { id }
        | RequestKind::WaitAll { id, .. }
        | RequestKind::Sync { id, .. } => id.into(),
        RequestKind::Lock { name, .. } | RequestKind::Unlock { name, .. } => name.into(),
        RequestKind::WaitAny { ids, .. } => ids.join(",").into(),
        _ => "".into(),
    }
}

fn response_name(r: Response) -> &'static str {
    match r {
        Response::Wait => "wait",
        Response::Ack => "ack",
        Response::Nack => "nack",
        Response::GroupData => "group_data",
        Response::Roster => "roster",
    }
}

/// Rows to write, by group (looked up without building a key).
type Dirty = HashMap<String, HashSet<u64>>;

fn mark(dirty: &mut Dirty, group: &str, seq: u64) {
    match dirty.get_mut(group) {
        Some(seqs) => {
            seqs.insert(seq);
        }
        None => {
            dirty.insert(group.to_owned(), HashSet::from([seq]));
        }
    }
}

fn unmark(dirty: &mut Dirty, group: &str, seq: u64) {
    if let Some(seqs) = dirty.get_mut(group) {
        seqs.remove(&seq);
    }
}

/// Drops `log`'s oldest event; returns its bytes. When stored: its row goes (`trims`), and
/// the new first row is written again with the count of dropped events.
fn drop_oldest(
    name: &str,
    log: &mut GroupLog,
    dirty: &mut Dirty,
    trims: &mut HashMap<String, u64>,
    persist: bool,
) -> usize {
    let Some(seq) = log.entries.front().map(|e| e.seq) else {
        return 0;
    };
    let bytes = log.drop_oldest();
    if persist {
        unmark(dirty, name, seq);
        let below = log.entries.front().map_or(log.next_seq + 1, |e| e.seq);
        match trims.get_mut(name) {
            Some(t) => *t = below,
            None => {
                trims.insert(name.to_owned(), below);
            }
        }
        if log.entries.front().is_some() {
            mark(dirty, name, below);
        }
    }
    bytes
}

impl History {
    pub fn new(max_group_bytes: usize, max_total_bytes: usize) -> Self {
        History {
            groups: HashMap::new(),
            ended: VecDeque::new(),
            max_group_bytes,
            max_total_bytes,
            total_bytes: 0,
            next_base: 1,
            persist: false,
            dirty: HashMap::new(),
            trims: HashMap::new(),
        }
    }

    /// Records what is to be stored, for [`History::take_mutations`].
    pub fn persisted(mut self) -> Self {
        self.persist = true;
        self
    }

    fn touch(&mut self, group: &str, seq: u64) {
        if self.persist {
            mark(&mut self.dirty, group, seq);
        }
    }

    /// What changed since the last call, to be stored with the state's next batch.
    pub fn take_mutations(&mut self) -> Vec<Mutation> {
        if self.dirty.is_empty() && self.trims.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.trims.len());
        for (group, seqs) in std::mem::take(&mut self.dirty) {
            for seq in seqs {
                if let Some(m) = self.row(group.clone(), seq) {
                    out.push(m);
                }
            }
        }
        for (group, below) in self.trims.drain() {
            out.push(Mutation::TrimHistory { group, below });
        }
        out
    }

    fn row(&self, group: String, seq: u64) -> Option<Mutation> {
        let log = self.groups.get(&group)?;
        let entry = Box::new(log.get(seq)?.clone());
        Some(Mutation::PutHistory {
            group,
            seq,
            dropped: log.dropped,
            entry,
        })
    }

    /// Every history as rows, for a state file written anew.
    pub fn snapshot(&mut self) -> Vec<Mutation> {
        self.dirty.clear();
        self.trims.clear();
        let mut out = Vec::new();
        for (group, log) in &self.groups {
            for e in &log.entries {
                out.push(Mutation::PutHistory {
                    group: group.clone(),
                    seq: e.seq,
                    dropped: log.dropped,
                    entry: Box::new(e.clone()),
                });
            }
        }
        out
    }

    /// Puts back the histories read from the store (rows that cannot be read are left out),
    /// within today's bounds.
    pub fn restore(&mut self, rows: Vec<(String, u64, String)>) {
        let mut ended: Vec<(u64, String)> = Vec::new();
        let mut current: Option<String> = None;
        for (group, seq, text) in rows {
            let Ok(row) = serde_json::from_str::<Row>(&text) else {
                continue;
            };
            if row.entry.seq != seq {
                continue;
            }
            if current.as_deref() != Some(group.as_str()) {
                current = Some(group.clone());
                let mut log = GroupLog::new(seq);
                log.dropped = row.dropped;
                self.groups.insert(group.clone(), log);
            }
            let Some(log) = self.groups.get_mut(&group) else {
                continue;
            };
            if seq <= log.next_seq && !log.entries.is_empty() {
                continue;
            }
            log.next_seq = seq;
            log.bytes += entry_bytes(&row.entry);
            self.total_bytes += entry_bytes(&row.entry);
            self.next_base = self.next_base.max(seq + 1);
            log.entries.push_back(row.entry);
        }
        for (name, log) in &mut self.groups {
            for e in &log.entries {
                if let What::Request(s) = &e.what {
                    if s.end_ms.is_none() {
                        log.open
                            .insert((s.client.clone(), s.kind.clone(), s.id.clone()), e.seq);
                    }
                }
            }
            if let Some(last) = log.entries.back() {
                if matches!(last.what, What::Cleared | What::Expired) {
                    log.ended = true;
                    log.open.clear();
                    ended.push((last.at_ms, name.clone()));
                }
            }
        }
        ended.sort();
        self.ended.extend(ended.into_iter().map(|(_, name)| name));
        // Bounds that shrank since: drop the oldest.
        let persist = self.persist;
        let History {
            groups,
            dirty,
            trims,
            max_group_bytes,
            total_bytes,
            ..
        } = self;
        for (name, log) in groups.iter_mut() {
            while log.bytes > *max_group_bytes && !log.entries.is_empty() {
                *total_bytes -= drop_oldest(name, log, dirty, trims, persist);
            }
        }
        while self.total_bytes > self.max_total_bytes {
            let Some(gone) = self.ended.pop_front() else {
                break;
            };
            self.evict(&gone);
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Forgets a gone group's whole history.
    fn evict(&mut self, gone: &str) {
        let Some(log) = self.groups.remove(gone) else {
            return;
        };
        self.total_bytes -= log.bytes;
        if self.persist {
            self.dirty.remove(gone);
            self.trims.insert(gone.to_owned(), log.next_seq + 1);
        }
    }

    /// Appends to `group`'s history and keeps within the bounds.
    fn push(&mut self, group: &str, at_ms: u64, what: What) -> u64 {
        if !self.groups.contains_key(group) {
            self.groups
                .insert(group.to_owned(), GroupLog::new(self.next_base));
        }
        let max_group = self.max_group_bytes;
        let persist = self.persist;
        let History {
            groups,
            dirty,
            trims,
            ..
        } = self;
        let Some(log) = groups.get_mut(group) else {
            return 0;
        };
        let before = log.bytes;
        let seq = log.push(at_ms, what);
        if persist {
            mark(dirty, group, seq);
        }
        while log.bytes > max_group && !log.entries.is_empty() {
            drop_oldest(group, log, dirty, trims, persist);
        }
        let after = log.bytes;
        self.next_base = self.next_base.max(seq + 1);
        self.total_bytes = self.total_bytes - before + after;
        while self.total_bytes > self.max_total_bytes {
            if let Some(gone) = self.ended.pop_front() {
                // A name that came back to life keeps its history.
                if gone != group && self.groups.get(&gone).is_some_and(|l| l.ended) {
                    self.evict(&gone);
                }
                continue;
            }
            let History {
                groups,
                dirty,
                trims,
                ..
            } = self;
            let Some(log) = groups.get_mut(group) else {
                break;
            };
            if log.entries.is_empty() {
                break;
            }
            let freed = drop_oldest(group, log, dirty, trims, persist);
            self.total_bytes -= freed;
        }
        seq
    }

    /// Records `request` as the state machine answered it at `at_ms`: `reply` is `None`
    /// when it was held (parked). `seen` says what it did to its group. Returns what
    /// [`History::answered`] needs for a held request.
    pub fn asked(
        &mut self,
        request: &Request,
        at_ms: u64,
        reply: Option<&Reply>,
        seen: Seen,
    ) -> Option<Asked> {
        let group = request.group_name.as_str();
        let Seen {
            known,
            exists,
            registered,
            created,
        } = seen;
        if !known && !exists {
            // Refused before a group was made (no group_size, over a limit): nothing to show.
            return None;
        }
        if let RequestKind::Operator { .. } = request.kind {
            // Its event says what the operator did.
            return None;
        }
        // Recorded here rather than from the state machine's event, to come first.
        if let Some(size) = created {
            if let Some(log) = self.groups.get_mut(group) {
                log.ended = false;
            }
            self.push(group, at_ms, What::Created { size });
        }
        if registered {
            let role = request.role.clone().unwrap_or_default();
            self.push(
                group,
                at_ms,
                What::Registered {
                    client: text(&request.client_name),
                    role: text(&role),
                },
            );
        }
        let kind = request.kind.name();
        let waiting = reply.is_none_or(Reply::is_wait);
        // The call's key only when it may be needed: most requests are answered at once in a
        // group where nothing polls.
        let has_open = self.groups.get(group).is_some_and(|l| !l.open.is_empty());
        let key: Option<CallKey> = (has_open || waiting).then(|| {
            (
                text(&request.client_name),
                kind.to_owned(),
                text(&call_id(&request.kind)),
            )
        });
        // A polling client's next ask of a call answered `wait` continues it.
        let open = match (&key, has_open) {
            (Some(key), true) => self
                .groups
                .get_mut(group)
                .and_then(|log| log.open.get(key).copied().map(|seq| (log, seq)))
                .and_then(|(log, seq)| {
                    let e = log.get_mut(seq)?;
                    match &mut e.what {
                        What::Request(s) => {
                            s.asks = s.asks.saturating_add(1);
                            s.held |= reply.is_none();
                            Some(seq)
                        }
                        _ => None,
                    }
                }),
            _ => None,
        };
        if let Some(seq) = open {
            self.touch(group, seq);
        }
        if let (None, Some(key), true) = (open, &key, has_open) {
            self.abandon(group, key, at_ms);
        }
        let seq = match open {
            Some(seq) => seq,
            None => {
                let detail = match &request.kind {
                    RequestKind::Fail { reason } => Some(text(reason)),
                    _ => None,
                };
                self.push(
                    group,
                    at_ms,
                    What::Request(Span {
                        client: text(&request.client_name),
                        kind: kind.to_owned(),
                        id: text(&call_id(&request.kind)),
                        end_ms: None,
                        response: None,
                        detail,
                        held: reply.is_none(),
                        asks: 1,
                    }),
                )
            }
        };
        if let RequestKind::Fail { reason } = &request.kind {
            if exists {
                self.push(
                    group,
                    at_ms,
                    What::Failed {
                        client: text(&request.client_name),
                        reason: text(reason),
                    },
                );
            }
        }
        match reply {
            Some(reply) if !waiting => {
                self.close(group, key.as_ref(), seq, reply, at_ms);
                None
            }
            _ => {
                if let (Some(log), Some(key)) = (self.groups.get_mut(group), &key) {
                    log.open.insert(key.clone(), seq);
                }
                // A held request is answered through `answered`; a `wait` stays open.
                reply.is_none().then(|| Asked {
                    group: group.to_owned(),
                    key,
                    seq,
                })
            }
        }
    }

    /// A client that starts another call has given up its calls answered `wait` (LAVA's
    /// tools make one call at a time): they end now, with the last answer they got.
    fn abandon(&mut self, group: &str, key: &CallKey, at_ms: u64) {
        let Some(log) = self.groups.get_mut(group) else {
            return;
        };
        let gone: Vec<(CallKey, u64)> = log
            .open
            .iter()
            .filter(|(k, _)| k.0 == key.0 && *k != key)
            .map(|(k, seq)| (k.clone(), *seq))
            .collect();
        for (k, seq) in gone {
            if let Some(e) = log.get_mut(seq) {
                if let What::Request(span) = &mut e.what {
                    if !span.held && span.end_ms.is_none() {
                        span.end_ms = Some(at_ms.max(e.at_ms));
                        span.response = Some("wait".into());
                        span.detail = Some("not asked again".into());
                        let grown = "wait".len() + "not asked again".len();
                        log.bytes += grown;
                        self.total_bytes += grown;
                        log.open.remove(&k);
                        if self.persist {
                            mark(&mut self.dirty, group, seq);
                        }
                    }
                }
            }
        }
    }

    /// Closes a request with its answer. A held request answered `wait` (its slice ended)
    /// stays open: its client asks again.
    pub fn answered(&mut self, asked: Asked, reply: &Reply, at_ms: u64) {
        self.close(&asked.group, asked.key.as_ref(), asked.seq, reply, at_ms);
    }

    fn close(&mut self, group: &str, key: Option<&CallKey>, seq: u64, reply: &Reply, at_ms: u64) {
        if reply.is_wait() {
            return;
        }
        let Some(log) = self.groups.get_mut(group) else {
            return;
        };
        if let Some(key) = key {
            if log.open.get(key) == Some(&seq) {
                log.open.remove(key);
            }
        }
        let Some(e) = log.get_mut(seq) else {
            return;
        };
        let What::Request(span) = &mut e.what else {
            return;
        };
        if span.end_ms.is_some() {
            return;
        }
        let start = e.at_ms;
        span.end_ms = Some(at_ms.max(start));
        let response = response_name(reply.response);
        span.response = Some(response.to_owned());
        let before = span.detail.as_ref().map_or(0, String::len);
        if let Some(error) = &reply.error {
            span.detail = Some(text(error));
        }
        let grown = span.detail.as_ref().map_or(0, String::len) + response.len();
        let sync_done =
            (span.kind == "lava_sync" && reply.response == Response::Ack).then(|| span.id.clone());
        log.bytes += grown - before.min(grown);
        self.total_bytes += grown - before.min(grown);
        if self.persist {
            mark(&mut self.dirty, group, seq);
        }
        // The first member answered for a round marks it complete.
        if let Some(id) = sync_done {
            let marked = log
                .entries
                .iter()
                .rev()
                .take_while(|e| e.at_ms >= start)
                .any(|e| matches!(&e.what, What::SyncComplete { id: done } if *done == id));
            if !marked {
                self.push(group, at_ms, What::SyncComplete { id });
            }
        }
    }

    /// Records a state machine event.
    pub fn event(&mut self, event: &Event, at_ms: u64) {
        let (group, what) = match event {
            // `asked` records it, before the request that made it.
            Event::Created { .. } => return,
            Event::Complete { group } => (group, What::Complete),
            Event::Cleared { group } => (group, What::Cleared),
            Event::Expired { group, .. } => (group, What::Expired),
            Event::Deadlock { group, verdict } => (
                group,
                What::Verdict {
                    text: text(verdict),
                },
            ),
            Event::Operator {
                group,
                operator,
                what,
            } => (
                group,
                What::Operator {
                    operator: text(operator),
                    what: text(what),
                },
            ),
            Event::LeaseExpired { group, client } => (
                group,
                What::Failed {
                    client: text(client),
                    reason: "its waiting tool stopped asking (lease expired)".into(),
                },
            ),
        };
        self.push(group, at_ms, what);
        if matches!(event, Event::Cleared { .. } | Event::Expired { .. }) {
            if let Some(log) = self.groups.get_mut(group.as_str()) {
                log.ended = true;
                log.open.clear();
            }
            self.ended.push_back(group.clone());
        }
    }

    /// `group`'s history, if it has one.
    pub fn log(&self, group: &str) -> Option<Log> {
        self.groups.get(group).map(|l| l.log(group))
    }

    /// Groups whose state is gone but whose history is kept: name, last event time, and
    /// whether it was cleared (else it expired).
    pub fn ended(&self) -> Vec<(String, u64, bool)> {
        self.groups
            .iter()
            .filter(|(_, l)| l.ended)
            .map(|(name, l)| {
                let last = l.entries.back();
                (
                    name.clone(),
                    last.map_or(0, |e| e.at_ms),
                    last.is_some_and(|e| e.what == What::Cleared),
                )
            })
            .collect()
    }

    /// When `group`'s history starts (its first kept event), ms.
    pub fn started(&self, group: &str) -> Option<u64> {
        self.groups.get(group)?.entries.front().map(|e| e.at_ms)
    }

    /// Requests of `group` answered `wait` and asked again (polling), still open: client,
    /// what it waits for, since when.
    pub fn polling(&self, group: &str) -> Vec<(String, String, u64)> {
        let Some(log) = self.groups.get(group) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String, u64)> = log
            .open
            .values()
            .filter_map(|seq| {
                let first = log.entries.front()?.seq;
                let e = log
                    .entries
                    .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
                match &e.what {
                    What::Request(s) if !s.held => Some((
                        s.client.clone(),
                        lava_protocol::timeline::describe(s),
                        e.at_ms,
                    )),
                    _ => None,
                }
            })
            .collect();
        out.sort();
        out
    }
}

/// Who and what, for one event's line (the web view's events table and `status --group`).
pub fn event_text(e: &Entry) -> (String, String) {
    match &e.what {
        What::Created { size } => (String::new(), format!("group created for {size} members")),
        What::Registered { client, role } => (client.clone(), format!("registered as {role}")),
        What::Complete => (String::new(), "every member registered".into()),
        What::Request(s) => {
            let how = match (s.held, s.asks) {
                (false, 1) => String::new(),
                (true, 1) => ", held".into(),
                (true, n) => format!(", held, asked {n} times"),
                (false, n) => format!(", polled, asked {n} times"),
            };
            let took = match s.end_ms {
                Some(end) if end > e.at_ms => format!(" after {}", duration_text(end - e.at_ms)),
                _ => String::new(),
            };
            (s.client.clone(), format!("{}{took}{how}", describe(s)))
        }
        What::SyncComplete { id } => (String::new(), format!("sync {id:?} complete")),
        What::Failed { client, reason } => (client.clone(), format!("failed: {reason}")),
        What::Verdict { text } => (String::new(), format!("verdict: {text}")),
        What::Operator { operator, what } => {
            (String::new(), format!("operator {operator}: {what}"))
        }
        What::Cleared => (String::new(), "cleared by every member".into()),
        What::Expired => (String::new(), "expired".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lava_protocol::Reply;
    use serde_json::json;

    fn request(client: &str, body: serde_json::Value) -> Request {
        let mut v = json!({"client_name": client, "group_name": "g", "group_size": 2});
        for (k, val) in body.as_object().unwrap() {
            v[k] = val.clone();
        }
        Request::from_value(&v).unwrap()
    }

    fn seen(known: bool, exists: bool, registered: bool) -> Seen {
        Seen {
            known,
            exists,
            registered,
            created: (!known && exists).then_some(2),
        }
    }

    fn sync(client: &str) -> Request {
        request(
            client,
            json!({"request": "lava_sync", "messageID": "s", "message": {}}),
        )
    }

    #[test]
    fn a_held_sync_is_one_request_from_ask_to_answer_and_a_round_line() {
        let mut h = History::new(1 << 20, 1 << 20);
        let asked = h.asked(&sync("a"), 100, None, seen(false, true, true));
        assert!(asked.is_some(), "held: answered later");
        h.asked(&sync("b"), 300, Some(&Reply::ack()), seen(true, true, true));
        h.answered(asked.unwrap(), &Reply::ack(), 310);
        let log = h.log("g").unwrap();
        let kinds: Vec<&What> = log.events.iter().map(|e| &e.what).collect();
        assert_eq!(kinds[0], &What::Created { size: 2 });
        assert!(matches!(kinds[1], What::Registered { client, .. } if client == "a"));
        let What::Request(a) = kinds[2] else {
            panic!("{kinds:?}")
        };
        assert_eq!(
            (a.end_ms, a.held, a.response.as_deref()),
            (Some(310), true, Some("ack"))
        );
        let rounds = kinds
            .iter()
            .filter(|w| matches!(w, What::SyncComplete { .. }))
            .count();
        assert_eq!(rounds, 1, "one line per round: {kinds:?}");
    }

    #[test]
    fn polling_asks_are_one_request() {
        let mut h = History::new(1 << 20, 1 << 20);
        let wait = request("a", json!({"request": "lava_wait", "messageID": "m"}));
        for at in [0, 1000, 2000] {
            assert!(h
                .asked(&wait, at, Some(&Reply::wait()), seen(at > 0, true, at == 0))
                .is_none());
        }
        assert_eq!(h.polling("g").len(), 1);
        h.asked(&wait, 3000, Some(&Reply::ack()), seen(true, true, false));
        let log = h.log("g").unwrap();
        let spans: Vec<&Span> = log
            .events
            .iter()
            .filter_map(|e| match &e.what {
                What::Request(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(spans.len(), 1);
        assert_eq!(
            (spans[0].asks, spans[0].end_ms, spans[0].held),
            (4, Some(3000), false)
        );
        assert!(h.polling("g").is_empty());
    }

    #[test]
    fn a_client_that_moves_on_leaves_its_polled_call() {
        let mut h = History::new(1 << 20, 1 << 20);
        let data = request("a", json!({"request": "group_data"}));
        h.asked(&data, 0, Some(&Reply::wait()), seen(false, true, true));
        let send = request(
            "a",
            json!({"request": "lava_send", "messageID": "m", "message": {}}),
        );
        h.asked(&send, 500, Some(&Reply::ack()), seen(true, true, false));
        assert!(h.polling("g").is_empty());
        let log = h.log("g").unwrap();
        let What::Request(s) = &log.events[2].what else {
            panic!("{:?}", log.events)
        };
        assert_eq!(
            (s.end_ms, s.detail.as_deref()),
            (Some(500), Some("not asked again"))
        );
    }

    #[test]
    fn a_group_keeps_within_its_bound_oldest_dropped_first() {
        let per_entry = entry_bytes(&Entry {
            seq: 0,
            at_ms: 0,
            what: What::Request(Span {
                client: "a".into(),
                kind: "lava_send".into(),
                id: "m".into(),
                end_ms: None,
                response: Some("ack".into()),
                detail: None,
                held: false,
                asks: 1,
            }),
        });
        let mut h = History::new(per_entry * 10, 1 << 30);
        let send = request(
            "a",
            json!({"request": "lava_send", "messageID": "m", "message": {}}),
        );
        for at in 0..1000 {
            h.asked(&send, at, Some(&Reply::ack()), seen(true, true, false));
        }
        let log = h.log("g").unwrap();
        assert!(
            log.events.len() <= 10 && log.events.len() >= 5,
            "{}",
            log.events.len()
        );
        assert_eq!(log.dropped as usize + log.events.len(), 1000);
        assert_eq!(log.events.last().unwrap().at_ms, 999, "the newest kept");
        assert!(h.total_bytes() <= per_entry * 10);
    }

    #[test]
    fn the_total_bound_drops_gone_groups_first() {
        let mut h = History::new(1 << 20, 4000);
        let reply = Reply::ack();
        let mut old = sync("a");
        old.group_name = "old".into();
        h.asked(&old, 0, Some(&Reply::wait()), seen(false, true, true));
        h.event(
            &Event::Cleared {
                group: "old".into(),
            },
            1,
        );
        assert_eq!(h.ended().len(), 1);
        let send = request(
            "a",
            json!({"request": "lava_send", "messageID": "m", "message": {}}),
        );
        for at in 0..200 {
            h.asked(&send, at, Some(&reply), seen(true, true, false));
        }
        assert!(
            h.log("old").is_none(),
            "the gone group's history went first"
        );
        assert!(h.total_bytes() <= 4000, "{}", h.total_bytes());
        let live = h.log("g").unwrap();
        assert!(live.dropped > 0 && !live.events.is_empty());
        let counted: usize = live.events.iter().map(entry_bytes).sum();
        assert_eq!(counted, h.total_bytes(), "the running count matches");
    }

    #[test]
    fn an_operator_action_is_an_event_and_its_request_no_call() {
        let mut h = History::new(1 << 20, 1 << 20);
        h.asked(&sync("a"), 0, None, seen(false, true, true));
        let unblock = Request::new(
            "g",
            "operator",
            "",
            RequestKind::Operator {
                action: lava_protocol::message::OperatorAction::Unblock { reason: None },
            },
        );
        assert!(h
            .asked(&unblock, 5, Some(&Reply::ack()), seen(true, true, false))
            .is_none());
        h.event(
            &Event::Operator {
                group: "g".into(),
                operator: "operator".into(),
                what: "unblocked 1 held request".into(),
            },
            6,
        );
        let log = h.log("g").unwrap();
        assert!(!log
            .events
            .iter()
            .any(|e| matches!(&e.what, What::Request(s) if s.kind == "operator")));
        let last = &log.events.last().unwrap().what;
        assert_eq!(
            last,
            &What::Operator {
                operator: "operator".into(),
                what: "unblocked 1 held request".into()
            }
        );
        assert_eq!(
            event_text(log.events.last().unwrap()).1,
            "operator operator: unblocked 1 held request"
        );
    }

    #[test]
    fn a_request_refused_before_any_group_leaves_nothing() {
        let mut h = History::new(1 << 20, 1 << 20);
        let r = h.asked(
            &sync("a"),
            0,
            Some(&Reply::nack("no group_size")),
            seen(false, false, false),
        );
        assert!(r.is_none());
        assert!(h.log("g").is_none());
    }

    /// The history table as the store keeps it, from `take_mutations`.
    fn store(table: &mut std::collections::BTreeMap<(String, u64), String>, m: Vec<Mutation>) {
        for m in m {
            match m {
                Mutation::PutHistory {
                    group,
                    seq,
                    dropped,
                    entry,
                } => {
                    table.insert((group, seq), row_text(dropped, &entry));
                }
                Mutation::TrimHistory { group, below } => {
                    table.retain(|(g, s), _| g != &group || *s >= below);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_stored_history_comes_back_the_same_with_its_dropped_count() {
        let mut h = History::new(2000, 1 << 20).persisted();
        let mut table = std::collections::BTreeMap::new();
        let asked = h.asked(&sync("a"), 100, None, seen(false, true, true));
        store(&mut table, h.take_mutations());
        h.asked(&sync("b"), 300, Some(&Reply::ack()), seen(true, true, true));
        h.answered(asked.unwrap(), &Reply::ack(), 310);
        let send = request(
            "a",
            json!({"request": "lava_send", "messageID": "m", "message": {}}),
        );
        for at in 400..430 {
            h.asked(&send, at, Some(&Reply::ack()), seen(true, true, false));
        }
        store(&mut table, h.take_mutations());
        let before = h.log("g").unwrap();
        assert!(before.dropped > 0, "the bound dropped some");
        let rows = table
            .into_iter()
            .map(|((g, s), e)| (g, s, e))
            .collect::<Vec<_>>();
        assert_eq!(rows.len(), before.events.len(), "dropped rows are gone");
        let mut back = History::new(2000, 1 << 20).persisted();
        back.restore(rows);
        assert_eq!(back.log("g").unwrap(), before);
        assert!(back.take_mutations().is_empty());
        // Numbering goes on after the restored events.
        back.asked(&send, 500, Some(&Reply::ack()), seen(true, true, false));
        let last = back.log("g").unwrap().events.last().unwrap().seq;
        assert_eq!(last, before.events.last().unwrap().seq + 1);
    }

    #[test]
    fn a_gone_groups_stored_rows_go_with_its_history_and_a_new_one_starts_clean() {
        let mut h = History::new(1500, 2000).persisted();
        let mut table = std::collections::BTreeMap::new();
        let mut old = sync("a");
        old.group_name = "old".into();
        h.asked(&old, 0, Some(&Reply::wait()), seen(false, true, true));
        h.event(
            &Event::Cleared {
                group: "old".into(),
            },
            1,
        );
        store(&mut table, h.take_mutations());
        let send = request(
            "a",
            json!({"request": "lava_send", "messageID": "m", "message": {}}),
        );
        for at in 0..40 {
            h.asked(&send, at, Some(&Reply::ack()), seen(true, true, false));
        }
        assert!(h.log("old").is_none());
        // The same name again: its new rows are numbered past the old ones.
        h.asked(&old, 50, Some(&Reply::wait()), seen(false, true, true));
        store(&mut table, h.take_mutations());
        let old_rows = table.keys().filter(|(g, _)| g == "old").count();
        let again = h.log("old").unwrap();
        assert_eq!((again.dropped, again.events.len()), (0, 3), "{again:?}");
        assert_eq!(old_rows, 3);
        let mut back = History::new(1500, 2000);
        back.restore(table.into_iter().map(|((g, s), e)| (g, s, e)).collect());
        assert_eq!(back.log("old"), h.log("old"));
        assert_eq!(back.log("g"), h.log("g"));
    }
}
