//! Scenario 6: the state folder vanishes while the coordinator runs (deleted with its state
//! file). Are later sends refused, or acknowledged into unlinked files? Does it say so in its
//! log? After a restart on a recreated folder, which acknowledged sends are there? Issue 15's
//! finding 4: an acknowledged send that is lost, or silence in the log, is a violation.

use std::time::Duration;

use lava_protocol::{Request, RequestKind, Response};
use serde_json::json;

use super::{Coord, Opts, Outcome};

fn req(client: &str, kind: RequestKind) -> Request {
    let mut r = Request::new("vanish", client, "r", kind);
    r.group_size = Some(2);
    r
}

pub fn run(opts: &Opts) -> Outcome {
    let name = "vanish";
    let sends = if opts.large { 100 } else { 10 };
    let dir = lava_multinode_tests::TempDir::new("soak-vanish");
    let folder = dir.path().join("state");
    let fail = |line: String| Outcome {
        name,
        violations: 1,
        known: 0,
        line,
        details: vec![],
    };
    if let Err(e) = std::fs::create_dir_all(&folder) {
        return fail(format!("violations 1: {e}"));
    }
    let mut coord = match Coord::start(
        &opts.coordinator,
        dir.path(),
        &folder.join("state.db"),
        "{}",
    ) {
        Ok(c) => c,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    let client = coord.client().with_io_timeout(Duration::from_secs(5));
    let send = |id: &str| {
        req(
            "a",
            RequestKind::Send {
                id: id.into(),
                message: json!({"id": id}),
            },
        )
    };
    let mut unexpected = Vec::new();
    if !matches!(client.call(&send("before")), Ok(r) if r.response == Response::Ack) {
        unexpected.push("the send before the folder vanished was not acknowledged".to_owned());
    }
    let log_before = coord.log_text().lines().count();
    let _ = std::fs::remove_dir_all(&folder);
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut unanswered = 0;
    for k in 0..sends {
        let id = format!("after{k}");
        match client.call(&send(&id)) {
            Ok(r) if r.response == Response::Ack => acked.push(id),
            Ok(_) => refused += 1,
            Err(_) => unanswered += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let said: Vec<String> = coord
        .log_text()
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .map(|l| l.chars().take(160).collect())
        .collect();
    // Restart on the folder as the coordinator left it: what survived?
    coord.kill9();
    let restarted = coord.spawn().is_ok() && coord.wait_ready(Duration::from_secs(15)).is_some();
    let mut lost = Vec::new();
    if restarted {
        // The send before the removal too: the state file is written again from memory.
        for id in std::iter::once("before".to_owned()).chain(acked.iter().cloned()) {
            let r = client.call(&req("b", RequestKind::Wait { id: id.clone() }));
            if !matches!(r, Ok(ref rep) if rep.response == Response::Ack) {
                lost.push(id);
            }
        }
    } else {
        unexpected.push("it did not start again on a recreated state folder".into());
    }
    coord.kill9();
    if !lost.is_empty() {
        unexpected.push(format!(
            "{} acknowledged sends gone after the restart: {}",
            lost.len(),
            lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if said.is_empty() {
        unexpected.push("nothing logged at WARN or ERROR about the vanished folder".into());
    }
    let details = unexpected.clone();
    let violations = unexpected.len();
    let line = format!(
        "load 1 group, {sends} sends after its state folder was deleted; faults: state folder removed while running; \
         violations {violations} (unexpected {violations}); figures: after the removal {} acknowledged, {refused} refused, \
         {unanswered} unanswered; WARN/ERROR lines about it: {}{}; after a restart {} of {} \
         acknowledged sends are gone",
        acked.len(),
        said.len(),
        said.first()
            .map(|l| format!(" (first: {l})"))
            .unwrap_or_default(),
        lost.len(),
        acked.len() + 1,
    );
    Outcome {
        name,
        violations,
        known: 0,
        line,
        details,
    }
}
