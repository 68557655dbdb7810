//! `lava-coordinator status`: asks a running coordinator over its port and prints what it
//! says, for operators and for health checks.

use std::fmt::Write as _;
use std::time::Duration;

use lava_protocol::timeline::{duration_text, Log};
use lava_protocol::Client;

use crate::history::event_text;
use serde_json::{json, Value};

/// Exit status of `status`.
pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const UNREACHABLE: u8 = 2;

/// Asks `address` and prints the answer; returns the exit status.
pub fn run(address: &str, group: Option<&str>, secret: Option<&str>, raw: bool, all: bool) -> u8 {
    let mut query = json!({"request": "status"});
    if let Some(group) = group {
        query["group"] = group.into();
    }
    if let Some(secret) = secret {
        query["secret"] = secret.into();
    }
    let client = Client::new(address).with_connect_timeout(Duration::from_secs(3));
    let body = match client.call_raw(&query.to_string(), None) {
        Ok(Some(body)) => body,
        Ok(None) => {
            eprintln!("lava-coordinator status: {address} closed the connection without an answer");
            return UNREACHABLE;
        }
        Err(e) => {
            eprintln!("lava-coordinator status: {e}");
            return UNREACHABLE;
        }
    };
    let Ok(answer) = serde_json::from_str::<Value>(&body) else {
        eprintln!("lava-coordinator status: {address} answered something that is not JSON");
        return UNREACHABLE;
    };
    match answer["response"].as_str() {
        Some("status") => {}
        Some("nack") => {
            let why = answer["error"]
                .as_str()
                .unwrap_or("no reason given (not our coordinator?)");
            eprintln!("lava-coordinator status: refused: {why}");
            return REFUSED;
        }
        _ => {
            eprintln!("lava-coordinator status: unexpected answer: {body:.200}");
            return UNREACHABLE;
        }
    }
    let groups = answer["groups"].as_array().cloned().unwrap_or_default();
    if raw {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or(body));
    } else {
        print!("{}", render(address, &answer, group.is_some(), all));
    }
    if let (Some(name), true) = (group, groups.is_empty() && answer["history"].is_null()) {
        eprintln!("lava-coordinator status: no group {name:?}");
        return REFUSED;
    }
    OK
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// Over this many groups, the view summarises (without `--all`).
pub const SUMMARY_OVER: usize = 20;
/// Groups shown by name in a summary.
const SUMMARY_SHOWN: usize = 10;

/// The human view: every group, or (over `SUMMARY_OVER` groups, without `all`) counts and the
/// groups that most need a look: the stuck ones (held requests, failed members) first, then the
/// longest idle.
pub fn render(address: &str, a: &Value, detailed: bool, all: bool) -> String {
    let c = &a["counters"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lava-coordinator {} at {address}: up {} s, {} state, {} groups, {} connections, {} held requests",
        text(&a["version"]),
        text(&a["uptime"]),
        if a["durable"] == true { "durable" } else { "in-memory" },
        text(&c["groups"]),
        text(&c["connections"]),
        text(&c["held"]),
    );
    let _ = writeln!(
        out,
        "requests {}, nacks {}, bad input {}, refused {}, stored {} bytes",
        text(&c["requests"]),
        text(&c["nacks"]),
        text(&c["bad_input"]),
        text(&c["refused"]),
        text(&c["stored_bytes"]),
    );
    let mut groups: Vec<&Value> = a["groups"].as_array().into_iter().flatten().collect();
    let summarise = !all && !detailed && groups.len() > SUMMARY_OVER;
    if summarise {
        let count = |f: &dyn Fn(&Value) -> bool| groups.iter().filter(|g| f(g)).count();
        let held = count(&|g| g["blocked"].as_array().is_some_and(|b| !b.is_empty()));
        let failed = count(&|g| g["failed"].as_object().is_some_and(|f| !f.is_empty()));
        let forming = count(&|g| g["registered"].as_u64() < g["size"].as_u64());
        let _ = writeln!(
            out,
            "{} groups: {held} with held requests, {failed} with failed members, {forming} not yet complete",
            groups.len()
        );
        let idle = |g: &Value| g["idle_seconds"].as_f64().unwrap_or(0.0);
        let stuck = |g: &Value| {
            g["blocked"].as_array().map_or(0, Vec::len)
                + g["failed"].as_object().map_or(0, |f| f.len())
        };
        groups.sort_by(|x, y| {
            (stuck(y) > 0)
                .cmp(&(stuck(x) > 0))
                .then(idle(y).total_cmp(&idle(x)))
        });
        let _ = writeln!(
            out,
            "the {} that most need a look (stuck first, then the longest idle); --all lists all {}:",
            SUMMARY_SHOWN,
            groups.len()
        );
        groups.truncate(SUMMARY_SHOWN);
    }
    for g in groups {
        let blocked = g["blocked"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "group {}: {}/{} registered{}, idle {} s, {} blocked, {} cleared{}",
            text(&g["name"]),
            text(&g["registered"]),
            text(&g["size"]),
            if g["roster_declared"] == true {
                " (roster declared)"
            } else {
                ""
            },
            text(&g["idle_seconds"]),
            blocked,
            g["cleared"].as_array().map_or(0, Vec::len),
            if g["protected"] == true {
                ", protected"
            } else {
                ""
            },
        );
        if !detailed {
            continue;
        }
        let members = g["members"].as_object().cloned().unwrap_or_default();
        let width = members.keys().map(String::len).max().unwrap_or(6).max(6);
        let _ = writeln!(
            out,
            "  {:width$}  {:12}  {:24}  blocked on",
            "member", "role", "sent"
        );
        for (client, role) in &members {
            let waits: Vec<String> = g["blocked"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["client"] == *client.as_str())
                .map(|b| {
                    format!(
                        "{} (for {:.1} s)",
                        text(&b["waits_for"]),
                        b["seconds"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  {client:width$}  {:12}  {:24}  {}",
                text(role),
                list(&g["sent"][client]),
                if waits.is_empty() {
                    "-".to_owned()
                } else {
                    waits.join("; ")
                }
            );
        }
        for (member, reason) in g["failed"].as_object().into_iter().flatten() {
            let _ = writeln!(out, "  failed: {member}: {}", text(reason));
        }
        for (id, arrived) in g["sync_arrivals"].as_object().into_iter().flatten() {
            let _ = writeln!(out, "  sync {id}: arrived {}", list(arrived));
        }
        for (id, b) in g["barriers"].as_object().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  barrier {id} ({}): round {}, arrived {}",
                text(&b["for"]),
                b["round"],
                list(&b["arrived"])
            );
        }
        for (id, entries) in g["mail"]["queues"].as_object().into_iter().flatten() {
            let _ = writeln!(out, "  queue {id}: {entries} entries");
        }
        for (member, roles) in g["failure_scopes"].as_object().into_iter().flatten() {
            let _ = writeln!(out, "  failure scope of {member}: roles {}", list(roles));
        }
        for (scope, prefix) in [("group", "lock"), ("lab", "lab-wide lock")] {
            for (name, lock) in g["locks"][scope].as_object().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {prefix} {name}: {} of {} places held by {}",
                    lock["holders"].as_array().map_or(0, Vec::len),
                    lock["count"],
                    list(&lock["holders"])
                );
            }
        }
    }
    if detailed {
        history(&mut out, &a["history"]);
    }
    out
}

/// Events of a history listed by `status --group`; the JSON view has them all.
const HISTORY_SHOWN: usize = 200;

/// A group's history, one event a line, times from its first kept event.
fn history(out: &mut String, value: &Value) {
    let Ok(log) = serde_json::from_value::<Log>(value.clone()) else {
        return;
    };
    let _ = writeln!(
        out,
        "history of {}{}: {} events{}",
        log.group,
        if log.ended {
            " (its state is gone)"
        } else {
            ""
        },
        log.events.len(),
        match log.dropped {
            0 => String::new(),
            n => format!(", {n} older ones dropped (history_group_bytes, history_total_bytes)"),
        }
    );
    let start = log.events.first().map_or(0, |e| e.at_ms);
    let skip = log.events.len().saturating_sub(HISTORY_SHOWN);
    if skip > 0 {
        let _ = writeln!(out, "  ({skip} earlier events not listed; --json has them)");
    }
    for e in log.events.iter().skip(skip) {
        let (who, what) = event_text(e);
        let _ = writeln!(
            out,
            "  +{:<8} {:12} {what}",
            duration_text(e.at_ms.saturating_sub(start)),
            who
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(groups: usize) -> Value {
        let groups: Vec<Value> = (0..groups)
            .map(|i| {
                json!({"name": format!("g{i}"), "registered": 2, "size": 2,
                       "idle_seconds": i, "blocked": if i == 3 { json!([{"client": "a"}]) } else { json!([]) },
                       "cleared": [], "failed": {}, "members": {}})
            })
            .collect();
        json!({"version": "x", "uptime": 1, "counters": {}, "groups": groups})
    }

    #[test]
    fn one_group_with_its_history() {
        let mut a = answer(1);
        a["history"] = json!({"group": "g0", "dropped": 2, "events": [
            {"seq": 3, "at_ms": 1000, "event": "registered", "client": "a", "role": "server"},
            {"seq": 4, "at_ms": 1500, "event": "request", "client": "a", "kind": "lava_sync",
             "id": "s", "end_ms": 3500, "response": "ack", "held": true, "asks": 1},
            {"seq": 5, "at_ms": 3500, "event": "sync_complete", "id": "s"},
        ]});
        let text = render("a", &a, true, false);
        assert!(
            text.contains("history of g0: 3 events, 2 older ones dropped"),
            "{text}"
        );
        assert!(
            text.contains("+0.5s     a            lava_sync \"s\" -> ack after 2s, held"),
            "{text}"
        );
        assert!(
            text.contains("+2.5s                  sync \"s\" complete"),
            "{text}"
        );
    }

    #[test]
    fn many_groups_are_summarised_unless_all() {
        let few = render("a", &answer(5), false, false);
        assert_eq!(few.matches("\ngroup g").count(), 5, "{few}");
        let many = render("a", &answer(30), false, false);
        assert!(
            many.contains(
                "30 groups: 1 with held requests, 0 with failed members, 0 not yet complete"
            ),
            "{many}"
        );
        assert_eq!(many.matches("\ngroup g").count(), SUMMARY_SHOWN, "{many}");
        // The stuck one first, then the longest idle.
        let first = many.lines().find(|l| l.starts_with("group ")).unwrap();
        assert!(first.starts_with("group g3:"), "{many}");
        assert!(many.contains("\ngroup g29:"), "{many}");
        let all = render("a", &answer(30), false, true);
        assert_eq!(all.matches("\ngroup g").count(), 30);
    }

    #[test]
    fn a_groups_coordination_state_is_shown() {
        let mut a = answer(1);
        a["groups"][0]["locks"] =
            json!({"group": {"dut": {"count": 1, "holders": ["a"]}}, "lab": {}});
        a["groups"][0]["barriers"] =
            json!({"up": {"for": "role server", "round": 2, "arrived": ["s1"]}});
        a["groups"][0]["mail"] = json!({"direct": {}, "queues": {"work": 3}});
        a["groups"][0]["failure_scopes"] = json!({"srv": ["server"]});
        let text = render("a", &a, true, false);
        for line in [
            "  lock dut: 1 of 1 places held by a",
            "  barrier up (role server): round 2, arrived s1",
            "  queue work: 3 entries",
            "  failure scope of srv: roles server",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
    }
}
