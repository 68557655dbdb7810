//! Scenario 4: floods over every limit (groups, group size, ids, bytes per group and in
//! total, names, request bytes). Every request must be answered `nack` naming the limit, and
//! nothing may be stored: the status view (groups, members, ids, stored bytes) is the same
//! after each flood as before it.

use std::time::{Duration, Instant};

use lava_protocol::{Reply, Request, RequestKind, Response};
use serde_json::{json, Value};

use super::{quantile_ms, raw, status, Coord, Opts, Outcome};

const MAX_GROUPS: usize = 6;
const MAX_GROUP_BYTES: usize = 20_000;
const MAX_TOTAL_BYTES: usize = 60_000;

/// What the coordinator keeps, as its status view shows it (times left out).
fn stored(addr: &str) -> Result<Value, String> {
    let mut s = status(addr, Duration::from_secs(5))?;
    let mut groups = s["groups"].take();
    if let Some(list) = groups.as_array_mut() {
        for g in list {
            if let Some(o) = g.as_object_mut() {
                o.remove("age_seconds");
                o.remove("idle_seconds");
            }
        }
    }
    Ok(json!({
        "groups": s["counters"]["groups"],
        "stored_bytes": s["counters"]["stored_bytes"],
        "list": groups,
    }))
}

fn req(group: &str, client: &str, role: &str, size: u32, kind: RequestKind) -> Request {
    let mut r = Request::new(group, client, role, kind);
    r.group_size = Some(size);
    r
}

fn send(group: &str, client: &str, id: &str, data: Value) -> Request {
    req(
        group,
        client,
        "r",
        4,
        RequestKind::Send {
            id: id.into(),
            message: data,
        },
    )
}

pub fn run(opts: &Opts) -> Outcome {
    let name = "limits";
    let reps = if opts.large { 100 } else { 10 };
    let fail = |line: String| Outcome {
        name,
        violations: 1,
        known: 0,
        line,
        details: vec![],
    };
    let dir = lava_multinode_tests::TempDir::new("soak-limits");
    let config = format!(
        r#"{{"max_groups": {MAX_GROUPS}, "max_group_size": 8, "max_ids_per_group": 10, "max_group_bytes": {MAX_GROUP_BYTES}, "max_total_bytes": {MAX_TOTAL_BYTES}}}"#
    );
    let coord = match Coord::start(
        &opts.coordinator,
        dir.path(),
        &dir.path().join("state.db"),
        &config,
    ) {
        Ok(c) => c,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    let addr = coord.addr.clone();
    let client = coord.client().with_io_timeout(Duration::from_secs(10));
    let call = |r: &Request| -> Reply {
        client
            .call(r)
            .unwrap_or_else(|e| Reply::nack(format!("client error: {e}")))
    };
    // Five groups; g0 with every id it may have; g1-g3 with 15 kB each.
    let mut setup = Vec::new();
    for g in 0..5 {
        for c in ["a", "b"] {
            setup.push(send(&format!("g{g}"), c, "d0", json!({"v": 1})));
        }
    }
    for k in 1..10 {
        setup.push(send("g0", "a", &format!("d{k}"), json!({"v": k})));
    }
    for g in 1..4 {
        setup.push(send(
            &format!("g{g}"),
            "a",
            "big",
            json!("x".repeat(15_000)),
        ));
    }
    for r in &setup {
        let reply = call(r);
        if reply.response != Response::Ack {
            return fail(format!(
                "violations 1: setup {} got {reply:?}",
                r.kind.name()
            ));
        }
    }
    let free_total = |addr: &str| -> usize {
        let s = stored(addr).unwrap_or_default();
        MAX_TOTAL_BYTES.saturating_sub(s["stored_bytes"].as_u64().unwrap_or(0) as usize)
    };
    let free = free_total(&addr);
    let big = |n: usize, c: char| c.to_string().repeat(n);

    type Make = Box<dyn Fn(usize) -> Request>;
    // (what, limits one of which the nack must name, the request of repetition i)
    let phase_a: Vec<(&str, &[&str], Make)> = vec![
        (
            "group_size over max_group_size",
            &["max_group_size"],
            Box::new(|i| req(&format!("gs{i}"), "a", "r", 9, RequestKind::GroupData)),
        ),
        (
            "a 25 kB group name",
            &["max_group_bytes"],
            Box::new(move |i| {
                req(
                    &format!("{}{i}", big(25_000, 'N')),
                    "a",
                    "r",
                    2,
                    RequestKind::GroupData,
                )
            }),
        ),
        (
            "a 25 kB client name",
            &["max_group_bytes"],
            Box::new(move |i| send("g4", &format!("{}{i}", big(25_000, 'C')), "d0", json!({}))),
        ),
        (
            "a 25 kB role",
            &["max_group_bytes"],
            Box::new(move |i| {
                req(
                    "g4",
                    "c",
                    &format!("{}{i}", big(25_000, 'R')),
                    4,
                    RequestKind::GroupData,
                )
            }),
        ),
        (
            "an 11th message id",
            &["max_ids_per_group"],
            Box::new(|i| send("g0", "a", &format!("new{i}"), json!({}))),
        ),
        (
            "an 11th id as a sync id",
            &["max_ids_per_group"],
            Box::new(|i| {
                req(
                    "g0",
                    "b",
                    "r",
                    4,
                    RequestKind::Sync {
                        id: format!("s{i}"),
                        message: json!({}),
                    },
                )
            }),
        ),
        (
            "a 25 kB message id",
            &["max_group_bytes"],
            Box::new(move |i| send("g4", "a", &format!("{}{i}", big(25_000, 'I')), json!({}))),
        ),
        (
            "6 kB more in a group holding 15 kB",
            &["max_group_bytes"],
            Box::new(move |i| send("g1", "b", &format!("more{i}"), json!(big(6_000, 'y')))),
        ),
        (
            "a 10.5 kB sync message (kept twice)",
            &["max_group_bytes", "max_total_bytes"],
            Box::new(move |i| {
                req(
                    "g4",
                    "a",
                    "r",
                    4,
                    RequestKind::Sync {
                        id: "s".into(),
                        message: json!(format!("{}{i}", big(10_500, 's'))),
                    },
                )
            }),
        ),
        (
            "a send over the total left",
            &["max_total_bytes"],
            Box::new(move |i| send("g4", "b", &format!("fill{i}"), json!(big(free + 500, 'z')))),
        ),
    ];
    let phase_b: Vec<(&str, &[&str], Make)> = vec![
        (
            "a 7th group",
            &["max_groups"],
            Box::new(|i| req(&format!("g-extra{i}"), "a", "r", 2, RequestKind::GroupData)),
        ),
        (
            "a 7th group with a 25 kB name",
            &["max_groups", "max_group_bytes"],
            Box::new(move |i| {
                req(
                    &format!("{}{i}", big(25_000, 'M')),
                    "a",
                    "r",
                    2,
                    RequestKind::GroupData,
                )
            }),
        ),
    ];

    let mut details = Vec::new();
    let mut tried = 0;
    let mut kinds = 0;
    let mut changed = 0;
    let mut unnamed = 0;
    let mut latency = Vec::new();
    let mut flood = |what: &str,
                     limits: &[&str],
                     ask: &dyn Fn(usize) -> (Response, String),
                     details: &mut Vec<String>| {
        kinds += 1;
        let before = stored(&addr);
        let n = if what.starts_with("1.1 MB") {
            reps.min(20)
        } else {
            reps
        };
        for i in 0..n {
            tried += 1;
            let t = Instant::now();
            let (response, error) = ask(i);
            latency.push(t.elapsed());
            if response != Response::Nack || !limits.iter().any(|l| error.contains(l)) {
                unnamed += 1;
                details.push(format!(
                    "{what}: answered {response:?} {error:.200}, not a nack naming {limits:?}"
                ));
            }
        }
        let after = stored(&addr);
        if before != after || before.is_err() {
            changed += 1;
            details.push(format!(
                "{what}: the stored state changed: before {before:.300?}, after {after:.300?}"
            ));
        }
    };
    fn by_call<'a>(
        call: &'a dyn Fn(&Request) -> Reply,
        make: &'a Make,
    ) -> impl Fn(usize) -> (Response, String) + 'a {
        move |i: usize| {
            let r = call(&make(i));
            (r.response, r.error.unwrap_or_default())
        }
    }
    for (what, limits, make) in &phase_a {
        flood(what, limits, &by_call(&call, make), &mut details);
    }
    // The request over max_request_bytes, raw.
    let body = format!(
        r#"{{"request": "lava_send", "group_name": "g4", "client_name": "a", "messageID": "r", "message": "{}"}}"#,
        big(1_100_000, 'q')
    );
    let oversized = |_i: usize| {
        // The header announces it all; the coordinator answers once it has read the header.
        let mut bytes = format!("{:08X}", body.len()).into_bytes();
        bytes.extend_from_slice(&body.as_bytes()[..4096]);
        let reply = raw(&addr, &bytes, true, Duration::from_secs(10))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| e.to_string());
        let response = if reply.contains("\"nack\"") {
            Response::Nack
        } else {
            Response::Ack
        };
        (response, reply)
    };
    flood(
        "1.1 MB request",
        &["max_request_bytes", "limit of 1048576"],
        &oversized,
        &mut details,
    );
    let sixth = call(&send("g5", "a", "d0", json!({})));
    if sixth.response != Response::Ack {
        details.push(format!(
            "the 6th group (max_groups {MAX_GROUPS}) was refused: {sixth:?}"
        ));
    }
    for (what, limits, make) in &phase_b {
        flood(what, limits, &by_call(&call, make), &mut details);
    }
    let end = stored(&addr).unwrap_or_default();
    let violations = details.len();
    let _ = coord;
    let line = format!(
        "load 6 groups filled to the limits (max_groups {MAX_GROUPS}, max_group_size 8, max_ids_per_group 10, \
         max_group_bytes {MAX_GROUP_BYTES}, max_total_bytes {MAX_TOTAL_BYTES}, max_request_bytes 1 MiB); \
         faults {tried} requests over a limit: {} kinds x {reps}, 1.1 MB bodies x {}; violations {violations} \
         (not a nack naming the limit {unnamed}, floods that changed the stored state {changed}); \
         figures: stored state unchanged by every flood ({} groups, {} bytes stored at the end), nack median {:.1} ms p99 {:.1} ms",
        kinds - 1,
        reps.min(20),
        end["groups"],
        end["stored_bytes"],
        quantile_ms(&latency, 0.5),
        quantile_ms(&latency, 0.99),
    );
    Outcome {
        name,
        violations,
        known: 0,
        line,
        details,
    }
}
