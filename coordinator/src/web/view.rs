//! The web view's model: what the groups page and a group's page show, taken from the state
//! machine and the histories (under the server's lock), then rendered as HTML without it.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use lava_protocol::timeline::{Log, Timeline, What};

use crate::history::History;
use crate::state::{Coordinator, Group};

/// A group's state on the groups page, in the order the page lists them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// A request has waited longer than `blocked_log_after`.
    Stuck,
    /// A member failed.
    Failed,
    /// A request is held or polling, or members are still to register.
    Waiting,
    Running,
    /// Every member cleared it: only its history is left.
    Complete,
    /// Forgotten after its idle time: only its history is left.
    Expired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Stuck => "stuck",
            State::Failed => "failed",
            State::Waiting => "waiting",
            State::Running => "running",
            State::Complete => "complete",
            State::Expired => "expired",
        }
    }
}

/// One line of the groups page.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub name: String,
    pub size: usize,
    pub registered: usize,
    pub age: Duration,
    pub idle: Duration,
    pub state: State,
    /// Requests waiting now: held, or polling.
    pub held: usize,
}

/// What a member is doing, on a group's page.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub name: String,
    pub role: String,
    /// What it waits for, and for how long.
    pub blocked: Vec<(String, Duration)>,
    pub sent: Vec<String>,
    pub failed: Option<String>,
    pub cleared: bool,
}

/// Everything a group's page shows.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub row: GroupRow,
    pub members: Vec<MemberRow>,
    pub log: Log,
    pub timeline: Timeline,
}

/// Sort keys of the groups page (`?sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    State,
    Name,
    Size,
    Age,
    Idle,
    Held,
}

impl SortKey {
    pub const ALL: [(SortKey, &'static str); 6] = [
        (SortKey::Name, "name"),
        (SortKey::Size, "size"),
        (SortKey::Age, "age"),
        (SortKey::Idle, "idle"),
        (SortKey::State, "state"),
        (SortKey::Held, "held"),
    ];

    pub fn parse(text: &str) -> Option<SortKey> {
        Self::ALL.iter().find(|(_, n)| *n == text).map(|(k, _)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("state", |(_, n)| n)
    }
}

/// Sorts `rows` by `key`; the state order puts the stuck ones first, then the longest idle.
pub fn sort(rows: &mut [GroupRow], key: SortKey, descending: bool) {
    match key {
        SortKey::State => rows.sort_by_key(|r| (r.state, Reverse(r.idle), r.name.clone())),
        SortKey::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        SortKey::Size => rows.sort_by_key(|r| (r.size, r.name.clone())),
        SortKey::Age => rows.sort_by_key(|r| (r.age, r.name.clone())),
        SortKey::Idle => rows.sort_by_key(|r| (r.idle, r.name.clone())),
        SortKey::Held => rows.sort_by_key(|r| (r.held, r.name.clone())),
    }
    if descending {
        rows.reverse();
    }
}

fn since(now: Instant, then: Instant) -> Duration {
    now.saturating_duration_since(then)
}

fn live_row(g: &Group, history: &History, now: Instant, stuck_after: Duration) -> GroupRow {
    let wall = crate::history::now_ms();
    let polling = history.polling(&g.name);
    let longest_poll = polling
        .iter()
        .map(|(_, _, at)| Duration::from_millis(wall.saturating_sub(*at)))
        .max();
    let longest_held = g.parked.iter().map(|p| since(now, p.since)).max();
    let longest = longest_held.max(longest_poll);
    let held = g.parked.len() + polling.len();
    let state = if longest.is_some_and(|l| l >= stuck_after) {
        State::Stuck
    } else if !g.failed.is_empty() {
        State::Failed
    } else if held > 0 || g.members.len() < g.size {
        State::Waiting
    } else {
        State::Running
    };
    GroupRow {
        name: g.name.clone(),
        size: g.size,
        registered: g.members.len(),
        age: since(now, g.created),
        idle: since(now, g.last_active),
        state,
        held,
    }
}

/// What is known of a group whose state is gone, from its history.
fn ended_row(name: &str, log: &Log, wall: u64) -> GroupRow {
    let size = log
        .events
        .iter()
        .find_map(|e| match e.what {
            What::Created { size } => Some(size),
            _ => None,
        })
        .unwrap_or(0);
    let registered = log
        .events
        .iter()
        .filter(|e| matches!(e.what, What::Registered { .. }))
        .count();
    let first = log.events.first().map_or(wall, |e| e.at_ms);
    let last = log.events.last().map_or(wall, |e| e.at_ms);
    let cleared = log.events.last().is_some_and(|e| e.what == What::Cleared);
    GroupRow {
        name: name.to_owned(),
        size: size.max(registered),
        registered,
        age: Duration::from_millis(wall.saturating_sub(first)),
        idle: Duration::from_millis(wall.saturating_sub(last)),
        state: if cleared {
            State::Complete
        } else {
            State::Expired
        },
        held: 0,
    }
}

/// Every group (live ones, then those only a history is left of), unsorted.
pub fn group_rows(
    machine: &Coordinator,
    history: &History,
    now: Instant,
    wall: u64,
    stuck_after: Duration,
) -> Vec<GroupRow> {
    let mut rows: Vec<GroupRow> = machine
        .groups()
        .map(|g| live_row(g, history, now, stuck_after))
        .collect();
    for (name, _, _) in history.ended() {
        if machine.group(&name).is_none() {
            if let Some(log) = history.log(&name) {
                rows.push(ended_row(&name, &log, wall));
            }
        }
    }
    rows
}

/// The page of group `name`; `None` when neither the group nor a history of it exists.
pub fn group_view(
    name: &str,
    machine: &Coordinator,
    history: &History,
    now: Instant,
    wall: u64,
    stuck_after: Duration,
) -> Option<GroupView> {
    let log = history.log(name);
    let Some(g) = machine.group(name) else {
        let log = log?;
        let members = log
            .events
            .iter()
            .filter_map(|e| match &e.what {
                What::Registered { client, role } => Some(MemberRow {
                    name: client.clone(),
                    role: role.clone(),
                    blocked: Vec::new(),
                    sent: Vec::new(),
                    failed: None,
                    cleared: log.events.last().is_some_and(|e| e.what == What::Cleared),
                }),
                _ => None,
            })
            .collect();
        let timeline = Timeline::build(&log, &[], None);
        return Some(GroupView {
            row: ended_row(name, &log, wall),
            members,
            log,
            timeline,
        });
    };
    let log = log.unwrap_or_else(|| Log {
        group: name.to_owned(),
        ..Log::default()
    });
    let polling = history.polling(name);
    let mut ids: Vec<&String> = g.messages.keys().collect();
    ids.sort();
    let members: Vec<MemberRow> =
        g.members
            .iter()
            .map(|(client, role)| {
                let mut blocked: Vec<(String, Duration)> = g
                    .parked
                    .iter()
                    .filter(|p| &p.client == client)
                    .map(|p| (p.condition.describe(), since(now, p.since)))
                    .collect();
                blocked.extend(polling.iter().filter(|(c, _, _)| c == client).map(
                    |(_, what, at)| {
                        (
                            format!("{what}, polling"),
                            Duration::from_millis(wall.saturating_sub(*at)),
                        )
                    },
                ));
                MemberRow {
                    name: client.clone(),
                    role: role.clone(),
                    blocked,
                    sent: ids
                        .iter()
                        .filter(|id| g.messages[**id].contains_key(client))
                        .map(|id| (*id).clone())
                        .collect(),
                    failed: g.failed.get(client).cloned(),
                    cleared: g.cleared.contains(client),
                }
            })
            .collect();
    let names: Vec<String> = g.members.keys().cloned().collect();
    let timeline = Timeline::build(&log, &names, Some(wall));
    Some(GroupView {
        row: live_row(g, history, now, stuck_after),
        members,
        log,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Seen;
    use lava_protocol::{Reply, Request};
    use serde_json::json;

    struct Lab {
        machine: Coordinator,
        history: History,
        now: Instant,
        next: u64,
    }

    impl Lab {
        fn new() -> Self {
            Lab {
                machine: Coordinator::new(Duration::from_secs(3600)),
                history: History::new(1 << 20, 1 << 20),
                now: Instant::now(),
                next: 0,
            }
        }

        /// What the server does around the state machine, with history.
        fn ask(&mut self, group: &str, client: &str, body: serde_json::Value) -> Option<Reply> {
            let mut v = json!({"client_name": client, "group_name": group, "group_size": 3,
                               "role": "node"});
            for (k, val) in body.as_object().unwrap() {
                v[k] = val.clone();
            }
            let req = Request::from_value(&v).unwrap();
            let member = |m: &Coordinator| {
                m.group(group)
                    .map(|g| (g.size, g.members.contains_key(client)))
            };
            let before = member(&self.machine);
            self.next += 1;
            let out = self.machine.handle(&req, self.now, Some(self.next));
            let after = member(&self.machine);
            let seen = Seen {
                known: before.is_some(),
                exists: after.is_some(),
                registered: before.is_none_or(|(_, m)| !m) && after.is_some_and(|(_, m)| m),
                created: after.filter(|_| before.is_none()).map(|(s, _)| s),
            };
            self.history
                .asked(&req, crate::history::now_ms(), out.reply.as_ref(), seen);
            for e in self.machine.take_events() {
                self.history.event(&e, crate::history::now_ms());
            }
            out.reply
        }
    }

    #[test]
    fn a_held_sync_shows_as_waiting_then_stuck_with_whom_it_waits_for() {
        let mut lab = Lab::new();
        let sync = json!({"request": "lava_sync", "messageID": "s", "message": {}});
        assert!(lab.ask("g", "a", sync.clone()).is_none(), "held");
        lab.ask(
            "g",
            "b",
            json!({"request": "lava_send", "messageID": "m", "message": {"k": "v"}}),
        );
        let wall = crate::history::now_ms();
        let rows = group_rows(
            &lab.machine,
            &lab.history,
            lab.now,
            wall,
            Duration::from_secs(60),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].state, rows[0].held, rows[0].registered),
            (State::Waiting, 1, 2)
        );
        let later = lab.now + Duration::from_secs(61);
        let rows = group_rows(
            &lab.machine,
            &lab.history,
            later,
            wall,
            Duration::from_secs(60),
        );
        assert_eq!(rows[0].state, State::Stuck);
        let view = group_view(
            "g",
            &lab.machine,
            &lab.history,
            later,
            wall,
            Duration::from_secs(60),
        )
        .unwrap();
        let a = &view.members[0];
        assert_eq!(a.name, "a");
        assert_eq!(a.blocked.len(), 1, "{:?}", a.blocked);
        assert!(a.blocked[0].0.contains("sync"), "{:?}", a.blocked);
        assert_eq!(a.blocked[0].1, Duration::from_secs(61));
        assert_eq!(view.members[1].sent, ["m"]);
        assert_eq!(view.timeline.lanes, ["a", "b"]);
        assert_eq!(view.timeline.bars.len(), 1);
        assert!(view.timeline.bars[0].waiting);
    }

    #[test]
    fn stuck_groups_come_first_then_the_longest_idle() {
        let row = |name: &str, state, idle| GroupRow {
            name: name.into(),
            size: 2,
            registered: 2,
            age: Duration::ZERO,
            idle: Duration::from_secs(idle),
            state,
            held: 0,
        };
        let mut rows = vec![
            row("a", State::Running, 5),
            row("b", State::Stuck, 1),
            row("c", State::Running, 50),
            row("d", State::Complete, 500),
        ];
        sort(&mut rows, SortKey::State, false);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a", "d"]);
        sort(&mut rows, SortKey::Name, true);
        assert_eq!(rows[0].name, "d");
        assert_eq!(SortKey::parse("idle"), Some(SortKey::Idle));
        assert_eq!(SortKey::parse("nonsense"), None);
    }

    #[test]
    fn a_cleared_group_is_listed_complete_from_its_history() {
        let mut lab = Lab::new();
        for c in ["a", "b", "c"] {
            lab.ask("g", c, json!({"request": "group_data"}));
        }
        for c in ["a", "b", "c"] {
            lab.ask("g", c, json!({"request": "clear_group"}));
        }
        assert!(lab.machine.group("g").is_none());
        let wall = crate::history::now_ms();
        let rows = group_rows(
            &lab.machine,
            &lab.history,
            lab.now,
            wall,
            Duration::from_secs(60),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].state, rows[0].size, rows[0].registered),
            (State::Complete, 3, 3)
        );
        let view = group_view(
            "g",
            &lab.machine,
            &lab.history,
            lab.now,
            wall,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(view.members.len(), 3);
        assert_eq!(view.timeline.now_ms, None, "not live");
        assert!(group_view(
            "nope",
            &lab.machine,
            &lab.history,
            lab.now,
            wall,
            Duration::from_secs(60)
        )
        .is_none());
    }
}
