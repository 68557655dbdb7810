//! Interop tests with Debian's real LAVA pieces (install them with `tests/interop/install.sh`):
//!
//! - LAVA's own `MultinodeProtocol` client (lava-dispatcher 2023.01) drives our coordinator
//!   as the nodes of a group;
//! - the same request sequences, one request at a time, go to a fresh reference coordinator
//!   (Debian's lava-coordinator) and to a fresh instance of ours, and the replies must be
//!   equal, except for the deviations of `docs/COMPATIBILITY.md`, each pinned by its own test
//!   below (`deviation_*`: the reference answers X, ours answers Y);
//! - sequences that crash the reference go to ours only: it answers and keeps serving.
//!
//! Without the Debian pieces every test here fails and says how to install them.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use lava_multinode_tests::interop::{
    exchange, normalise_ours, require_debian_pieces, run_sequence, run_sequence_text, same_answer,
    show, Answer, Delivery, LavaNode, Node, NodeRun, Step,
};
use lava_multinode_tests::Server;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

fn once(body: Value) -> Step {
    Step::once(body)
}

fn call(body: Value) -> Step {
    Step::call(body)
}

/// A 3-node group of two roles, as LAVA names jobs: 101 and 103 are `server`, 102 `client`.
/// The first role registered (`server`) sorts after the second (`client`) alphabetically, so
/// a coordinator that orders `group_data` by role name instead of first registration shows.
fn g3(group: &str) -> (Node, Node, Node) {
    (
        Node::new(group, "101", "server", 3),
        Node::new(group, "102", "client", 3),
        Node::new(group, "103", "server", 3),
    )
}

fn g2(group: &str) -> (Node, Node) {
    (
        Node::new(group, "101", "server", 2),
        Node::new(group, "102", "client", 2),
    )
}

fn response(answer: &Answer) -> Option<&str> {
    answer.as_ref()?.get("response")?.as_str()
}

fn reference() -> Server {
    lava_multinode_tests::interop::reference()
}

fn ours() -> Server {
    lava_multinode_tests::interop::ours(&[])
}

fn assert_alive(server: &mut Server, what: &str) {
    assert!(
        server.is_running(),
        "{what} died; its log:\n{}",
        server.log_text()
    );
}

/// Runs `steps` on a fresh reference and on a fresh instance of ours; ours normalised
/// (no `error` on `nack`).
fn both(steps: &[Step]) -> (Vec<Answer>, Vec<Answer>) {
    let (r, o) = both_text(steps);
    (
        r.into_iter().map(|(a, _)| a).collect(),
        o.into_iter().map(|(a, _)| a).collect(),
    )
}

/// [`both`] with the raw reply bodies as well (ours not normalised there).
type Texts = Vec<(Answer, Option<String>)>;
fn both_text(steps: &[Step]) -> (Texts, Texts) {
    let mut r = reference();
    let mut o = ours();
    let ra = run_sequence_text(&r.addr, steps);
    let oa = run_sequence_text(&o.addr, steps);
    assert_alive(&mut r, "the reference coordinator");
    assert_alive(&mut o, "our coordinator");
    (
        ra,
        oa.into_iter()
            .map(|(a, t)| (normalise_ours(&a), t))
            .collect(),
    )
}

#[track_caller]
fn assert_answer(got: &Answer, want: Value, what: &str) {
    let want = Some(want);
    assert!(
        same_answer(got, &want),
        "{what}: expected {}, got {}",
        show(&want),
        show(got)
    );
}

/// A request sequence for the differential test, with a few pinned reference answers (so
/// that the sequence is known to exercise what its name says).
struct Seq {
    name: &'static str,
    steps: Vec<Step>,
    expect: Vec<(usize, Value)>,
}

fn seq(name: &'static str, steps: Vec<Step>) -> Seq {
    Seq {
        name,
        steps,
        expect: Vec::new(),
    }
}

impl Seq {
    fn expect(mut self, index: usize, reply: Value) -> Seq {
        self.expect.push((index, reply));
        self
    }
}

fn ack() -> Value {
    json!({"response": "ack"})
}
fn wait() -> Value {
    json!({"response": "wait"})
}
fn nack() -> Value {
    json!({"response": "nack"})
}
fn ack_msg(message: Value) -> Value {
    json!({"response": "ack", "message": message})
}

// ---------------------------------------------------------------------------------------------
// a. The real LAVA client drives our coordinator.

/// The three nodes' scripts: a VM-group host (101, role `host`) and two guests (102, 103,
/// role `vm`), doing what LAVA jobs and LAVA's VM helpers do.
fn vm_group_scripts(group: &str) -> Vec<Value> {
    let common = |client: &str, role: &str, steps: Value| {
        json!({
            "group": group, "client": client, "role": role, "group_size": 3,
            "hostname": format!("node-{client}"), "poll_delay": 0.1, "timeout": 20,
            "system_timeout": 20, "steps": steps,
        })
    };
    let host = common(
        "101",
        "host",
        json!([
            {"op": "group_data"},                                                       // 0
            {"op": "send", "id": "host-ready", "message": {"ip": "192.0.2.1", "v": "1"}}, // 1
            {"op": "send", "id": "host-ready",
             "message": {"ip": "192.0.2.1", "name": "hôte ☃ 日本 😀"}},                   // 2
            {"op": "vm_start", "host_ip": "10.0.2.2"},                                  // 3
            {"op": "wait_all", "id": "vm-ready", "role": "vm"},                         // 4
            {"op": "send", "id": "booted", "message": {}},                              // 5
            {"op": "wait_all", "id": "booted"},                                         // 6
            {"op": "sync", "id": "phase"},                                              // 7
            {"op": "sync", "id": "phase"},                                              // 8
            {"op": "vm_stop", "status": "ok"},                                          // 9
            {"op": "vm_wait_all"},                                                      // 10
            {"op": "clear"},                                                            // 11
        ]),
    );
    let guest = |client: &str| {
        common(
            client,
            "vm",
            json!([
                {"op": "group_data"},                                                   // 0
                {"op": "vm_wait_start"},                                                // 1
                {"op": "wait", "id": "host-ready"},                                     // 2
                {"op": "send", "id": "vm-ready", "message": {"vm": client, "ünï": "✓"}}, // 3
                {"op": "wait_all", "id": "host-ready", "role": "host"},                 // 4
                {"op": "send", "id": "booted", "message": {"by": client}},              // 5
                {"op": "wait_all", "id": "booted"},                                     // 6
                {"op": "sync", "id": "phase"},                                          // 7
                {"op": "sync", "id": "phase"},                                          // 8
                {"op": "vm_stop", "status": "ok"},                                      // 9
                {"op": "vm_wait_all"},                                                  // 10
                {"op": "clear"},                                                        // 11
            ]),
        )
    };
    vec![host, guest("102"), guest("103")]
}

fn run_nodes(server: &Server, scripts: Vec<Value>) -> Vec<NodeRun> {
    let nodes: Vec<LavaNode> = scripts
        .into_iter()
        .map(|s| LavaNode::spawn(server.port, s))
        .collect();
    let runs: Vec<NodeRun> = nodes
        .into_iter()
        .map(|n| n.finish(Duration::from_secs(45)))
        .collect();
    for run in &runs {
        assert!(
            run.success && !run.timed_out,
            "LAVA client {} failed (timed out: {}):\n{}\nstderr:\n{}\ncoordinator log:\n{}",
            run.client,
            run.timed_out,
            run.transcript(),
            run.stderr,
            server.log_text()
        );
    }
    runs
}

#[track_caller]
fn assert_map(got: &Value, want: Value, what: &str) {
    // Senders race each other, so the order of a message's senders is not fixed here (the
    // differential test pins it for sequential sends).
    assert_eq!(got, &want, "{what}");
}

#[test]
fn real_lava_clients_drive_our_coordinator() {
    let mut server = ours();
    let runs = run_nodes(&server, vm_group_scripts("interop-vm-group"));
    let (host, guests) = (&runs[0], &runs[1..]);

    let roles = json!({"101": "host", "102": "vm", "103": "vm"});
    let host_ready = json!({"101": {"ip": "192.0.2.1", "name": "hôte ☃ 日本 😀"}});
    let vm_ready = json!({
        "102": {"vm": "102", "ünï": "✓"},
        "103": {"vm": "103", "ünï": "✓"},
    });
    let booted = json!({"101": {}, "102": {"by": "102"}, "103": {"by": "103"}});
    let stopped = json!({
        "101": {"status": "ok"}, "102": {"status": "ok"}, "103": {"status": "ok"},
    });

    for run in &runs {
        let who = format!("node {}", run.client);
        let gd = run.reply(0);
        assert_eq!(gd["response"], "group_data", "{who}: group_data: {gd}");
        assert_map(&gd["roles"], roles.clone(), &format!("{who}: roles"));
        // The same role's clients are listed together.
        let order: Vec<&str> = gd["roles"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| r.as_str().unwrap())
            .collect();
        let mut grouped = order.clone();
        grouped.dedup();
        assert_eq!(grouped.len(), 2, "{who}: roles not grouped: {gd}");
    }

    // The host.
    assert_eq!(host.reply(1), &ack(), "host: first send");
    assert_eq!(host.reply(2), &ack(), "host: repeated send");
    assert_eq!(host.reply(3), &ack(), "host: lava_vm_start");
    assert_eq!(host.reply(4)["response"], "ack");
    assert_map(
        &host.reply(4)["message"],
        vm_ready.clone(),
        "host: wait_all role vm",
    );
    assert_eq!(host.result(4), &vm_ready, "host: what LAVA's API returned");
    assert_eq!(host.reply(5), &ack());
    assert_map(&host.reply(6)["message"], booted.clone(), "host: wait_all");
    for i in [7, 8] {
        assert_eq!(host.reply(i), &ack_msg(json!("phase")), "host: sync {i}");
        assert_eq!(host.result(i), &json!("phase"));
    }
    assert_eq!(host.reply(9), &ack(), "host: lava_vm_stop");
    assert_map(
        &host.reply(10)["message"],
        stopped.clone(),
        "host: wait for VMs",
    );
    assert_eq!(host.reply(11), &ack(), "host: clear_group");

    // The guests.
    for run in guests {
        let who = format!("guest {}", run.client);
        assert_eq!(
            run.reply(1),
            &ack_msg(json!({"101": {"host_ip": "10.0.2.2"}})),
            "{who}: wait for lava_vm_start"
        );
        assert_eq!(
            run.reply(2),
            &ack_msg(host_ready.clone()),
            "{who}: lava_wait sees the host's latest data only"
        );
        assert_eq!(run.result(2), &host_ready);
        assert_eq!(run.reply(3), &ack(), "{who}: send");
        assert_eq!(
            run.reply(4),
            &ack_msg(host_ready.clone()),
            "{who}: wait_all role host"
        );
        assert_eq!(run.reply(5), &ack(), "{who}: send booted");
        assert_map(
            &run.reply(6)["message"],
            booted.clone(),
            &format!("{who}: wait_all"),
        );
        for i in [7, 8] {
            assert_eq!(run.reply(i), &ack_msg(json!("phase")), "{who}: sync {i}");
        }
        assert_eq!(run.reply(9), &ack(), "{who}: lava_vm_stop");
        assert_map(
            &run.reply(10)["message"],
            stopped.clone(),
            &format!("{who}: wait_all lava_vm_stop"),
        );
        assert_eq!(run.reply(11), &ack(), "{who}: clear_group");
    }

    // Every request went through LAVA's framing (and was counted in blocks); the group is
    // gone after every node cleared, so its name can be used again at once.
    assert_alive(&mut server, "our coordinator");
    let again = run_nodes(
        &server,
        (1..=2)
            .map(|i| {
                json!({
                    "group": "interop-vm-group", "client": format!("20{i}"), "role": "r",
                    "group_size": 2, "poll_delay": 0.1, "timeout": 20, "system_timeout": 20,
                    "steps": [{"op": "group_data"}, {"op": "clear"}],
                })
            })
            .collect(),
    );
    for run in &again {
        assert_eq!(run.reply(0)["response"], "group_data");
        assert_eq!(run.reply(0)["roles"], json!({"201": "r", "202": "r"}));
        assert_eq!(run.reply(1), &ack());
    }
}

/// The same real-client scripts against the reference and against ours give the same
/// replies, step by step (scripts that stay clear of the documented deviations: every
/// wait-all comes after a sync that follows everybody's send).
#[test]
fn real_lava_clients_get_the_same_replies_from_both() {
    let scripts = |group: &str| -> Vec<Value> {
        let big = "ß".repeat(3000) + &"x".repeat(20_000);
        [
            ("501", "server", "client"),
            ("502", "client", "server"),
            ("503", "server", "client"),
        ]
        .iter()
        .map(|(client, role, other)| {
            json!({
                "group": group, "client": client, "role": role, "group_size": 3,
                "poll_delay": 0.1, "timeout": 20, "system_timeout": 20,
                "steps": [
                    {"op": "group_data"},
                    {"op": "send", "id": "ready",
                     "message": {"ip": format!("192.0.2.{client}"), "ü": "☃"}},
                    {"op": "send", "id": "big", "message": {"blob": big, "by": client}},
                    {"op": "sync", "id": "sent"},
                    {"op": "wait_all", "id": "ready"},
                    {"op": "wait_all", "id": "ready", "role": other},
                    {"op": "wait", "id": "ready"},
                    {"op": "wait_all", "id": "big"},
                    {"op": "clear"},
                ],
            })
        })
        .collect()
    };
    let reference = reference();
    let on_reference = run_nodes(&reference, scripts("same"));
    let server = ours();
    let on_ours = run_nodes(&server, scripts("same"));
    for (r, o) in on_reference.iter().zip(&on_ours) {
        assert_eq!(r.lines.len(), o.lines.len());
        for i in 0..r.lines.len() {
            let (rr, or) = (r.reply(i), o.reply(i));
            // Concurrent senders: compare content (maps), not the order of senders.
            assert_eq!(
                rr, or,
                "node {} step {i} ({}): reference {rr}, ours {or}",
                r.client, r.lines[i]["op"]
            );
            assert_eq!(r.result(i), o.result(i), "node {} step {i}", r.client);
        }
        // The large reply (3 x 23 kB, over 4096-byte blocks) reached LAVA's client whole.
        assert_eq!(o.reply(7)["message"].as_object().map(|m| m.len()), Some(3));
    }
}

/// Eight real LAVA clients at once: start barrier, two syncs on one id, a send and a
/// wait-all each, a role-limited wait-all, clear.
#[test]
fn eight_real_lava_clients_at_once() {
    let mut server = ours();
    let scripts: Vec<Value> = (0..8)
        .map(|i| {
            let role = if i < 2 { "server" } else { "worker" };
            json!({
                "group": "eight", "client": format!("{}", 700 + i), "role": role,
                "group_size": 8, "poll_delay": 0.1, "timeout": 30, "system_timeout": 30,
                "steps": [
                    {"op": "group_data"},
                    {"op": "sync", "id": "go"},
                    {"op": "send", "id": "hello", "message": {"n": format!("{i}")}},
                    {"op": "sync", "id": "go"},
                    {"op": "wait_all", "id": "hello"},
                    {"op": "wait_all", "id": "hello", "role": "server"},
                    {"op": "clear"},
                ],
            })
        })
        .collect();
    let runs = run_nodes(&server, scripts);
    let all: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("{}", 700 + i), json!({"n": format!("{i}")})))
        .collect();
    for run in &runs {
        assert_eq!(run.reply(0)["roles"].as_object().unwrap().len(), 8);
        assert_eq!(run.reply(1), &ack_msg(json!("go")), "node {}", run.client);
        assert_eq!(run.reply(3), &ack_msg(json!("go")), "node {}", run.client);
        assert_eq!(
            run.reply(4),
            &ack_msg(Value::Object(all.clone())),
            "node {}",
            run.client
        );
        assert_eq!(
            run.reply(5),
            &ack_msg(Value::Object(all.clone())),
            "node {}",
            run.client
        );
        assert_eq!(run.reply(6), &ack(), "node {}", run.client);
    }
    assert_alive(&mut server, "our coordinator");
}

/// LAVA's delayed start (`lava-start` with `expect_role`): the clients' `set_up()` waits,
/// by role, for `lava_start` from the server, which `request_lava_start()` sends. Same replies
/// from the reference and from ours.
#[test]
fn real_lava_delayed_start_on_both() {
    let scripts = || -> Vec<Value> {
        let node = |client: &str, role: &str, steps: Value| {
            let mut script = json!({
                "group": "delayed", "client": client, "role": role, "group_size": 3,
                "poll_delay": 0.1, "timeout": 20, "system_timeout": 20, "steps": steps,
            });
            if role == "client" {
                script["expect_role"] = json!("server");
            }
            script
        };
        let client_steps = json!([{"op": "group_data"}, {"op": "delayed_start"},
                                  {"op": "wait", "id": "lava_start"}, {"op": "clear"}]);
        vec![
            node("601", "client", client_steps.clone()),
            node("602", "client", client_steps),
            node(
                "603",
                "server",
                json!([{"op": "group_data"},
                       {"op": "sleep", "seconds": 0.3},
                       {"op": "lava_start", "message": {"ip": "192.0.2.9", "ü": "ñ"}},
                       {"op": "clear"}]),
            ),
        ]
    };
    let start = ack_msg(json!({"603": {"ip": "192.0.2.9", "ü": "ñ"}}));
    for (name, server) in [("reference", reference()), ("ours", ours())] {
        let runs = run_nodes(&server, scripts());
        for run in &runs[..2] {
            assert_eq!(run.reply(1), &start, "{name}: client {}", run.client);
            assert_eq!(run.reply(2), &start, "{name}: client {}", run.client);
            assert_eq!(run.reply(3), &ack(), "{name}: client {}", run.client);
        }
        assert_eq!(runs[2].reply(2), &ack(), "{name}: lava_start");
        assert_eq!(
            runs[2].result(2).as_str(),
            Some(r#"{"response": "ack"}"#),
            "{name}"
        );
    }
}

/// Our own tools' first-class VM requests and LAVA's message ids show one state: the host
/// declares the roster and opens the start gate with our requests before the guests (real
/// LAVA clients) even exist; the guests see the gate through `lava_wait lava_vm_start` and
/// report through `lava_send lava_vm_stop`, and the host's `vm_wait_all` sees their reports.
#[test]
fn real_lava_guests_and_our_vm_requests_share_one_state() {
    use lava_protocol::message::{Roles, VmStatus};
    use lava_protocol::{Request, RequestKind, Response};

    let mut server = ours();
    let client = server.client();
    let group = "mixed-vm-group";
    let host_req = |kind: RequestKind| {
        let mut req = Request::new(group, "101", "host", kind);
        req.group_size = Some(3);
        req.block = Some(20.0);
        req
    };
    let mut roster = Roles::new();
    roster.insert("101".into(), "host".into());
    roster.insert("102".into(), "vm".into());
    roster.insert("103".into(), "vm".into());
    let declared = client
        .call(&host_req(RequestKind::DeclareRoster { roster }))
        .expect("declare the roster");
    assert_ne!(declared.response, Response::Nack, "{declared:?}");
    let started = client
        .call(&host_req(RequestKind::VmStart {
            host_ip: "10.0.2.2".into(),
        }))
        .expect("open the start gate");
    assert_eq!(started.response, Response::Ack, "{started:?}");

    let guest = |id: &str, stop: Value| {
        json!({
            "group": group, "client": id, "role": "vm", "group_size": 3,
            "poll_delay": 0.1, "timeout": 20, "system_timeout": 20,
            "steps": [{"op": "group_data"},
                      {"op": "vm_wait_start"},
                      stop,
                      {"op": "vm_wait_all"},
                      {"op": "clear"}],
        })
    };
    let guests: Vec<LavaNode> = vec![
        LavaNode::spawn(
            server.port,
            guest("102", json!({"op": "vm_stop", "status": "ok"})),
        ),
        LavaNode::spawn(
            server.port,
            guest(
                "103",
                json!({"op": "vm_stop", "status": "failed", "reason": "kernel panic"}),
            ),
        ),
    ];
    let stopped = client
        .call(&host_req(RequestKind::VmStop {
            status: VmStatus::Ok,
            reason: None,
        }))
        .expect("host vm_stop");
    assert_eq!(stopped.response, Response::Ack, "{stopped:?}");
    let mut all = client
        .call(&host_req(RequestKind::VmWaitAll))
        .expect("host vm_wait_all");
    for _ in 0..3 {
        if !all.is_wait() {
            break;
        }
        all = client.call(&host_req(RequestKind::VmWaitAll)).unwrap();
    }
    let reports = json!({
        "101": {"status": "ok"},
        "102": {"status": "ok"},
        "103": {"status": "failed", "reason": "kernel panic"},
    });
    assert_eq!(all.response, Response::Ack, "{all:?}");
    assert_eq!(all.message.as_ref(), Some(&reports), "{all:?}");
    assert_eq!(all.failed, Some(vec!["103".to_owned()]), "{all:?}");

    for node in guests {
        let run = node.finish(Duration::from_secs(45));
        assert!(run.success, "{}\n{}", run.transcript(), run.stderr);
        assert_eq!(
            run.reply(0),
            &json!({"response": "group_data",
                    "roles": {"101": "host", "102": "vm", "103": "vm"}}),
            "guest {}",
            run.client
        );
        assert_eq!(
            run.reply(1),
            &ack_msg(json!({"101": {"host_ip": "10.0.2.2"}})),
            "guest {}: the gate opened before it registered",
            run.client
        );
        assert_eq!(run.reply(2), &ack());
        assert_eq!(
            run.reply(3),
            &ack_msg(reports.clone()),
            "guest {}",
            run.client
        );
        assert_eq!(run.reply(4), &ack());
    }
    let cleared = client.call(&{
        let mut req = host_req(RequestKind::ClearGroup);
        req.block = None;
        req
    });
    assert_eq!(cleared.unwrap().response, Response::Ack);
    assert_alive(&mut server, "our coordinator");
}

/// A group reused after every node cleared starts empty: the real client's wait for the old
/// group's message times out (LAVA counts 1 s as 10 polls of 0.1 s).
#[test]
fn real_lava_client_sees_nothing_of_a_cleared_group() {
    let mut server = ours();
    let script = |client: &str, steps: Value| {
        json!({
            "group": "cleared", "client": client, "role": "r", "group_size": 1,
            "poll_delay": 0.1, "timeout": 1, "system_timeout": 20, "steps": steps,
        })
    };
    let first = run_nodes(
        &server,
        vec![script(
            "1",
            json!([{"op": "group_data"},
                   {"op": "send", "id": "old", "message": {"k": "v"}},
                   {"op": "clear"}]),
        )],
    );
    assert_eq!(first[0].reply(2), &ack());
    let second = LavaNode::spawn(
        server.port,
        script(
            "2",
            json!([{"op": "group_data"}, {"op": "wait", "id": "old"}]),
        ),
    )
    .finish(Duration::from_secs(30));
    assert_eq!(second.reply(0)["roles"], json!({"2": "r"}));
    let err = second.line(1)["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("MultinodeProtocolTimeoutError"),
        "a wait for the old group's message must time out: {}",
        second.transcript()
    );
    assert_alive(&mut server, "our coordinator");
}

/// LAVA's client shows a `nack` to the test shell as the string "nack" (the helper prints
/// " nack"): our coordinator's `nack` for a wait-all on a role nobody has is read as such.
#[test]
fn real_lava_client_gets_nack_for_an_unknown_role() {
    let server = ours();
    let script = |client: &str, role: &str, steps: Value| {
        json!({
            "group": "roles", "client": client, "role": role, "group_size": 2,
            "poll_delay": 0.1, "timeout": 5, "system_timeout": 20, "steps": steps,
        })
    };
    let runs = run_nodes(
        &server,
        vec![
            script(
                "1",
                "server",
                json!([{"op": "group_data"},
                       {"op": "send", "id": "x", "message": {}},
                       {"op": "wait_all", "id": "x", "role": "nobody"}]),
            ),
            script("2", "client", json!([{"op": "group_data"}])),
        ],
    );
    assert_eq!(runs[0].reply(2)["response"], "nack");
    assert_eq!(runs[0].result(2), &json!("nack"));
}

// ---------------------------------------------------------------------------------------------
// b. Differential: the same sequences to the reference and to ours.

fn differential_sequences() -> Vec<Seq> {
    let mut seqs = Vec::new();

    // group_data is the start barrier; roles are listed by role (first registered first),
    // then registration; a late group_data of a complete group gets the same answer.
    let (a, b, c) = g3("barrier");
    seqs.push(
        seq(
            "group_data barrier and role order",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.group_data()),
                once(c.group_data()),
                once(b.group_data()),
                once(a.group_data()),
            ],
        )
        .expect(0, wait())
        .expect(2, wait())
        .expect(
            3,
            json!({"response": "group_data",
                   "roles": {"101": "server", "103": "server", "102": "client"}}),
        ),
    );

    // The same, registering in another order.
    let (a, b, c) = g3("barrier2");
    seqs.push(
        seq(
            "group_data role order, client role first",
            vec![
                once(b.group_data()),
                once(c.group_data()),
                once(a.group_data()),
                once(c.group_data()),
            ],
        )
        .expect(
            2,
            json!({"response": "group_data",
                   "roles": {"102": "client", "103": "server", "101": "server"}}),
        ),
    );

    // group_size is read like Python's int(): a numeric string works; later group_size
    // values do not change the group.
    let (mut a, mut b) = g2("sizes");
    let a_str = a.body(json!({"request": "group_data", "group_size": "2"}));
    a.group_size = 2;
    b.group_size = 5;
    seqs.push(
        seq(
            "group_size as a string, and ignored once the group exists",
            vec![once(a_str.clone()), once(b.group_data()), once(a_str)],
        )
        .expect(0, wait())
        .expect(
            1,
            json!({"response": "group_data", "roles": {"101": "server", "102": "client"}}),
        ),
    );

    // lava_send / lava_wait with data; the sender sees its own message; unknown ids wait.
    let (a, b) = g2("sendwait");
    seqs.push(
        seq(
            "send and wait with data",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(b.wait("ready")),
                once(a.send("ready", json!({"ip": "192.0.2.1", "port": "8080"}))),
                once(b.wait("ready")),
                once(a.wait("ready")),
                once(b.wait("unknown")),
                once(b.send("nulls", Value::Null)),
                once(a.wait("nulls")),
                once(b.body(json!({"request": "lava_send", "messageID": "nomsg"}))),
                once(a.wait("nomsg")),
                once(a.send("text", json!("hello"))),
                once(b.wait("text")),
            ],
        )
        .expect(2, wait())
        .expect(3, ack())
        .expect(
            4,
            ack_msg(json!({"101": {"ip": "192.0.2.1", "port": "8080"}})),
        )
        .expect(6, wait())
        .expect(8, ack_msg(json!({"102": {}})))
        .expect(10, ack_msg(json!({"102": {}}))),
    );

    // A repeated send replaces the sender's own data (in its place); senders accumulate.
    let (a, b, c) = g3("accumulate");
    seqs.push(
        seq(
            "repeated send replaces own data, senders accumulate",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(c.group_data()),
                once(a.send("x", json!({"k": "1", "j": "1"}))),
                once(b.send("x", json!({"k": "b"}))),
                once(c.wait("x")),
                once(a.send("x", json!({"k": "2"}))),
                once(c.wait("x")),
                once(c.send("x", json!({}))),
                once(b.send("x", json!({"k": "b2", "z": "last"}))),
                once(a.wait("x")),
                once(b.wait("x")),
            ],
        )
        .expect(
            5,
            ack_msg(json!({"101": {"k": "1", "j": "1"}, "102": {"k": "b"}})),
        )
        .expect(7, ack_msg(json!({"101": {"k": "2"}, "102": {"k": "b"}})))
        .expect(
            10,
            ack_msg(json!({"101": {"k": "2"}, "102": {"k": "b2", "z": "last"}, "103": {}})),
        ),
    );

    // lava_wait_all without a role, in a complete group, once someone has sent.
    let (a, b, c) = g3("waitall");
    seqs.push(
        seq(
            "wait_all without role",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(c.group_data()),
                once(a.send("x", json!({"n": "1"}))),
                once(a.wait_all("x", None)),
                once(b.send("x", json!({"n": "2"}))),
                once(b.wait_all("x", None)),
                once(c.send("x", json!({"n": "3"}))),
                once(a.wait_all("x", None)),
                once(c.wait_all("x", None)),
                once(b.wait_all("x", None)),
                once(b.wait("x")),
            ],
        )
        .expect(4, wait())
        .expect(6, wait())
        .expect(
            8,
            ack_msg(json!({"101": {"n": "1"}, "102": {"n": "2"}, "103": {"n": "3"}})),
        ),
    );

    // lava_wait_all with a role: where the reference's shortcut and the intent agree
    // (nobody sent yet; only a later member sent; every member of the role sent).
    let (a, b, c) = g3("waitrole");
    seqs.push(
        seq(
            "wait_all with role",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(c.group_data()),
                once(b.wait_all("x", Some("server"))),
                once(c.send("x", json!({"s": "3"}))),
                once(b.wait_all("x", Some("server"))),
                once(a.send("x", json!({}))),
                once(b.wait_all("x", Some("server"))),
                once(b.send("y", json!({"c": "2"}))),
                once(a.wait_all("y", Some("client"))),
                once(c.wait_all("y", Some("client"))),
                once(b.wait_all("y", Some("client"))),
            ],
        )
        .expect(3, wait())
        .expect(5, wait())
        .expect(7, ack_msg(json!({"103": {"s": "3"}, "101": {}})))
        .expect(9, ack_msg(json!({"102": {"c": "2"}}))),
    );

    // lava_sync as LAVA's client does it (a call polls until it is not `wait`), and the
    // same id synced again after everybody picked up the first round.
    let (a, b) = g2("sync");
    seqs.push(
        seq(
            "sync, and sync again on the same id",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.sync("s")),
                call(b.sync("s")),
                call(a.sync("s")),
                once(a.sync("s")),
                call(b.sync("s")),
                call(a.sync("s")),
                once(b.sync("other")),
                call(a.sync("other")),
                call(b.sync("other")),
            ],
        )
        .expect(2, wait())
        .expect(3, ack_msg(json!("s")))
        .expect(5, wait())
        .expect(7, ack_msg(json!("s"))),
    );

    // Three nodes sync; two ids in flight at once.
    let (a, b, c) = g3("sync3");
    seqs.push(seq(
        "sync of three, two ids interleaved",
        vec![
            once(a.group_data()),
            once(b.group_data()),
            once(c.group_data()),
            once(a.sync("one")),
            once(b.sync("two")),
            once(b.sync("one")),
            once(c.sync("two")),
            call(a.sync("two")),
            call(c.sync("one")),
            call(a.sync("one")),
            call(b.sync("one")),
            call(b.sync("two")),
            call(c.sync("two")),
        ],
    ));

    // clear_group: the group lives until every client cleared; then the name is free and
    // the new group starts empty.
    let (a, b) = g2("reuse");
    seqs.push(
        seq(
            "clear_group and group reuse",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.send("x", json!({"v": "1"}))),
                once(a.clear()),
                once(b.wait("x")),
                once(b.clear()),
                once(a.group_data()),
                once(b.group_data()),
                once(a.wait("x")),
                once(a.sync("s")),
                call(b.sync("s")),
                call(a.sync("s")),
                once(b.clear()),
                once(a.clear()),
                once(a.wait("x")),
            ],
        )
        .expect(3, ack())
        .expect(4, ack_msg(json!({"101": {"v": "1"}})))
        .expect(6, wait())
        .expect(8, wait())
        .expect(14, nack()),
    );

    // Requests about groups that do not exist; clear_group as LAVA sends it (with
    // group_size) on an unknown group.
    let (a, _) = g2("ghost");
    let no_size = |v: Value| {
        let mut v = v;
        v.as_object_mut().unwrap().remove("group_size");
        v
    };
    seqs.push(
        seq(
            "unknown group",
            vec![
                once(a.wait("x")),
                once(a.send("x", json!({}))),
                once(a.wait_all("x", None)),
                once(a.sync("x")),
                once(no_size(a.clear())),
                once(no_size(a.group_data())),
                once(a.body(json!({"request": "group_data", "group_size": 0}))),
                once(a.clear()),
                once(a.wait("x")),
            ],
        )
        .expect(0, nack())
        .expect(7, ack()),
    );

    // Other request kinds and malformed-but-harmless requests.
    let (a, b) = g2("kinds");
    seqs.push(
        seq(
            "unknown and malformed requests",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.request("fly")),
                once(a.request("")),
                once(a.body(json!({"request": "aggregate"}))),
                once(json!({"group_name": "kinds", "client_name": "101"})),
                once(a.body(json!({"request": "lava_send", "client_name": null}))),
                Step::raw("[1, 2]"),
                Step::raw("{}"),
                once(a.send("still", json!({"ok": "yes"}))),
                once(b.wait("still")),
            ],
        )
        .expect(2, nack())
        .expect(4, nack())
        .expect(10, ack_msg(json!({"101": {"ok": "yes"}}))),
    );

    // Informational and unknown fields are ignored.
    let (a, b) = g2("extra");
    seqs.push(seq(
        "extra fields",
        vec![
            once(a.body(
                json!({"request": "group_data", "group_size": 2, "timeout": 90,
                               "nodeID": "101", "sub_id": 0, "whatever": [1, {"x": null}]}),
            )),
            once(b.group_data()),
            once(a.body(json!({"request": "lava_send", "messageID": "m",
                               "message": {"a": "b"}, "timeout": 30, "poll_delay": 1}))),
            once(b.body(
                json!({"request": "lava_wait", "messageID": "m", "message": null,
                               "role": "client", "junk": true}),
            )),
            // A registered client's later `role` is not looked at.
            once(a.body(
                json!({"request": "lava_send", "messageID": "m2", "role": "other",
                               "message": {"r": "x"}}),
            )),
            once(b.wait("m2")),
            once(b.group_data()),
        ],
    ));

    // Non-ASCII everywhere: group, ids and data, as LAVA sends it (escaped) and as raw UTF-8.
    let (a, b) = g2("grüppe-☃");
    let data = json!({"name": "Zoë ☃ 日本語", "emoji": "😀", "quote": "\"\\/\n\t", "ß": "ü"});
    let raw_utf8 = serde_json::to_string(&a.send("raw-ß", json!({"wörd": "ñ 😀"}))).unwrap();
    assert!(!raw_utf8.is_ascii());
    seqs.push(
        seq(
            "non-ASCII data, ids and group",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.send("nachricht-ß", data.clone())),
                once(b.wait("nachricht-ß")),
                once(b.wait_all("nachricht-ß", Some("server"))),
                Step::raw(raw_utf8),
                once(b.wait("raw-ß")),
                once(a.sync("sync-ü")),
                call(b.sync("sync-ü")),
                call(a.sync("sync-ü")),
            ],
        )
        .expect(3, ack_msg(json!({"101": data})))
        .expect(6, ack_msg(json!({"101": {"wörd": "ñ 😀"}})))
        .expect(9, ack_msg(json!("sync-ü"))),
    );

    // A large body (near LAVA's 0xFFFE limit) written in 4096-byte pieces, one by one, and
    // its large reply.
    let (a, b) = g2("large");
    let blob: String = (0..40_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let large = json!({"blob": blob, "tail": "é".repeat(500)});
    seqs.push(
        seq(
            "large body split across writes",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.send("big", large.clone())).chunks(vec![4096]),
                once(b.wait("big")),
                once(b.send("big", json!({"small": "1", "pad": "p".repeat(9000)})))
                    .chunks(vec![4096]),
                once(a.wait("big")),
            ],
        )
        .expect(2, ack())
        .expect(3, ack_msg(json!({"101": large}))),
    );

    // Two groups on one coordinator, with the same client names, do not see each other.
    let (a1, b1) = g2("left");
    let (a2, b2) = g2("right");
    seqs.push(
        seq(
            "groups are independent",
            vec![
                once(a1.group_data()),
                once(a2.group_data()),
                once(b1.group_data()),
                once(a2.group_data()),
                once(a1.send("x", json!({"g": "left"}))),
                once(b1.wait("x")),
                once(b2.group_data()),
                once(b2.wait("x")),
                once(a1.clear()),
                once(b1.clear()),
                once(a2.send("x", json!({"g": "right"}))),
                once(b2.wait("x")),
            ],
        )
        .expect(3, wait())
        .expect(7, wait())
        .expect(11, ack_msg(json!({"101": {"g": "right"}}))),
    );

    // Five nodes of three roles registering interleaved: group_data lists roles in the
    // order they first registered, each role's clients in registration order.
    let nodes: Vec<Node> = [
        ("11", "x"),
        ("12", "y"),
        ("13", "x"),
        ("14", "z"),
        ("15", "y"),
    ]
    .iter()
    .map(|(c, r)| Node::new("roles5", c, r, 5))
    .collect();
    let mut steps: Vec<Step> = nodes.iter().map(|n| once(n.group_data())).collect();
    steps.push(once(nodes[0].group_data()));
    seqs.push(seq("group_data order of three roles", steps).expect(
        4,
        json!({"response": "group_data",
                   "roles": {"11": "x", "13": "x", "12": "y", "15": "y", "14": "z"}}),
    ));

    // A sync while the group is incomplete waits for the missing member.
    let (a, b, c) = g3("syncearly");
    seqs.push(
        seq(
            "sync before the group is complete",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.sync("s")),
                once(b.sync("s")),
                once(a.sync("s")),
                once(c.group_data()),
                call(c.sync("s")),
                call(a.sync("s")),
                call(b.sync("s")),
            ],
        )
        .expect(4, wait())
        .expect(8, ack_msg(json!("s"))),
    );

    // A client that cleared may go on talking while the group lives (LAVA's finalise runs
    // once, but a retried job step may send again).
    let (a, b) = g2("afterclear");
    seqs.push(
        seq(
            "requests after the client's own clear_group",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.clear()),
                once(a.send("y", json!({"late": "1"}))),
                once(b.wait("y")),
                once(a.group_data()),
                once(a.wait("y")),
                once(b.clear()),
                once(b.wait("y")),
            ],
        )
        .expect(4, ack_msg(json!({"101": {"late": "1"}})))
        .expect(
            5,
            json!({"response": "group_data", "roles": {"101": "server", "102": "client"}}),
        ),
    );

    // Data of every JSON type, stored and returned as it came (LAVA's helpers send strings).
    let (a, b) = g2("types");
    let typed = json!({"int": 42, "neg": -7, "float": 1.5, "t": true, "f": false,
                       "none": null, "list": [1, "two", [3], {"four": 4}],
                       "obj": {"nested": {"deep": "é"}}, "empty": "", "zero": 0});
    seqs.push(
        seq(
            "message data of every JSON type",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                once(a.send("typed", typed.clone())),
                once(b.wait("typed")),
                once(b.send("typed", json!([1, 2]))),
                once(a.wait_all("typed", None)),
            ],
        )
        .expect(3, ack_msg(json!({"101": typed}))),
    );

    // Empty strings where a name is expected but not tested by the reference: message ids,
    // roles, a wait-all for the empty role.
    let (a, b) = g2("empties");
    let blank = Node::new("empties2", "1", "", 1);
    seqs.push(seq(
        "empty message ids and roles",
        vec![
            once(a.group_data()),
            once(b.group_data()),
            once(a.send("", json!({"e": "1"}))),
            once(b.wait("")),
            once(b.wait_all("", None)),
            once(blank.group_data()),
            once(blank.wait_all("x", Some(""))),
            once(a.body(json!({"request": "lava_send", "messageID": "m", "message": [1, 2]}))),
            once(b.wait("m")),
            once(a.body(json!({"request": "lava_send", "messageID": "n", "message": 7}))),
            once(b.wait("n")),
            once(a.body(json!({"request": "lava_wait", "messageID": "m", "group_size": 9}))),
        ],
    ));

    // A lower-case hex header (Python's int(x, 16) reads it; LAVA writes upper case).
    let (a, b) = g2("lowerhex");
    let body =
        lava_protocol::json::to_ascii_string(&a.send("hex", json!({"pad": "p".repeat(200)})));
    let lower = format!("{:08x}", body.len());
    assert!(lower.chars().any(|c| c.is_ascii_lowercase()), "{lower}");
    seqs.push(
        seq(
            "lower-case hex header",
            vec![
                once(a.group_data()),
                once(b.group_data()),
                Step::raw(body).header(lower),
                once(b.wait("hex")),
            ],
        )
        .expect(2, ack()),
    );

    // lava_sync with a message (LAVA's client never sends one): the reference answers with
    // the caller's own message instead of the id.
    let (a, b) = g2("syncmsg");
    seqs.push(seq(
        "sync carrying a message",
        vec![
            once(a.group_data()),
            once(b.group_data()),
            once(a.body(json!({"request": "lava_sync", "messageID": "s", "message": {"k": "a"}}))),
            call(b.body(json!({"request": "lava_sync", "messageID": "s", "message": null}))),
            call(a.body(json!({"request": "lava_sync", "messageID": "s", "message": {"k": "a"}}))),
        ],
    ));

    seqs
}

#[test]
fn same_replies_as_the_reference() {
    require_debian_pieces();
    let seqs = differential_sequences();
    // Each sequence gets a fresh reference and a fresh instance of ours; a few run at once
    // (each reference still gets one request at a time).
    let mut report = Vec::new();
    for batch in seqs.chunks(4) {
        let results: Vec<(Texts, Texts)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|sq| s.spawn(move || both_text(&sq.steps)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sequence thread"))
                .collect()
        });
        for (sq, (r_text, o_text)) in batch.iter().zip(results) {
            let r: Vec<Answer> = r_text.iter().map(|(a, _)| a.clone()).collect();
            let o: Vec<Answer> = o_text.iter().map(|(a, _)| a.clone()).collect();
            for (i, want) in &sq.expect {
                let want = Some(want.clone());
                assert!(
                    same_answer(&r[*i], &want),
                    "sequence {:?} step {i}: the reference answered {}, this test expects {} \
                     (the sequence no longer tests what it says)",
                    sq.name,
                    show(&r[*i]),
                    show(&want)
                );
            }
            for (i, step) in sq.steps.iter().enumerate() {
                if let Some(e) = r[i].as_ref().and_then(|a| a.get("transport_error")) {
                    panic!(
                        "sequence {:?} step {i}: reference transport error {e}",
                        sq.name
                    );
                }
                // Byte for byte too (Python's separators and \uXXXX escapes), except for
                // our nack's `error`.
                let (rt, ot) = (&r_text[i].1, &o_text[i].1);
                if same_answer(&r[i], &o[i]) && response(&r[i]) != Some("nack") && rt != ot {
                    report.push(format!(
                        "sequence {:?} step {i}: same reply, different text:\n  reference: {}\n  ours:      {}",
                        sq.name,
                        rt.as_deref().unwrap_or("-"),
                        ot.as_deref().unwrap_or("-")
                    ));
                }
                if !same_answer(&r[i], &o[i]) {
                    report.push(format!(
                        "sequence {:?} step {i} ({:?}):\n  request:   {}\n  reference: {}\n  ours:      {}",
                        sq.name,
                        step.mode,
                        step.body,
                        show(&r[i]),
                        show(&o[i])
                    ));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "our coordinator answers differently from the reference in {} place(s) not listed \
         in docs/COMPATIBILITY.md:\n{}",
        report.len(),
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Decided deviations: the reference answers X, ours answers Y (docs/COMPATIBILITY.md).

#[test]
fn deviation_wait_all_role_waits_for_every_member_of_the_role() {
    let (a, b, c) = g3("role");
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        once(c.group_data()),
        once(a.send("x", json!({"n": "1"}))),
        // 4: only the role's first member sent.
        once(b.wait_all("x", Some("server"))),
        once(a.send("y", json!({}))),
        once(c.send("y", json!({}))),
        // 7: the caller's own role has sent, the awaited role (client: 102) has not.
        once(a.wait_all("y", Some("client"))),
        once(c.send("x", json!({"n": "3"}))),
        // 9, 11: now every member of the awaited role has sent.
        once(b.wait_all("x", Some("server"))),
        once(b.send("y", json!({"c": "2"}))),
        once(a.wait_all("y", Some("client"))),
    ];
    let (r, o) = both(&steps);
    assert_answer(
        &r[4],
        ack_msg(json!({"101": {"n": "1"}})),
        "reference, step 4",
    );
    assert_answer(
        &o[4],
        wait(),
        "ours, step 4 (103 of role server has not sent)",
    );
    assert_answer(
        &r[7],
        ack_msg(json!({"101": {}, "103": {}})),
        "reference, step 7",
    );
    assert_answer(
        &o[7],
        wait(),
        "ours, step 7 (102 of role client has not sent)",
    );
    let x = ack_msg(json!({"101": {"n": "1"}, "103": {"n": "3"}}));
    assert_answer(&r[9], x.clone(), "reference, step 9");
    assert_answer(&o[9], x, "ours, step 9");
    let y = ack_msg(json!({"101": {}, "103": {}, "102": {"c": "2"}}));
    assert_answer(&r[11], y.clone(), "reference, step 11");
    assert_answer(&o[11], y, "ours, step 11");
}

/// The reference crashes on a wait-all for a role nobody has (KeyError): ours only.
#[test]
fn deviation_wait_all_for_an_unknown_role() {
    let (a, b, c) = g3("norole");
    let mut o = ours();
    let answers = run_sequence(
        &o.addr,
        &[
            once(a.group_data()),
            once(b.group_data()),
            once(a.send("x", json!({}))),
            once(a.wait_all("x", Some("nobody"))),
            once(c.group_data()),
            once(a.wait_all("x", Some("nobody"))),
            once(b.wait("x")),
        ],
    );
    assert_answer(&answers[3], wait(), "before the roster is known");
    assert_eq!(response(&answers[5]), Some("nack"), "{}", show(&answers[5]));
    assert_answer(&answers[6], ack_msg(json!({"101": {}})), "still serving");
    assert_alive(&mut o, "our coordinator");
}

#[test]
fn deviation_wait_all_without_role_before_anyone_sent() {
    let (a, b) = g2("nosend");
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(a.wait_all("x", None)),
    ]);
    assert_answer(&r[2], nack(), "reference");
    assert_answer(&o[2], wait(), "ours");
}

#[test]
fn deviation_wait_all_without_role_waits_for_the_whole_group() {
    let (a, b, c) = g3("partial");
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(a.send("x", json!({"n": "1"}))),
        once(b.send("x", json!({"n": "2"}))),
        once(a.wait_all("x", None)),
        once(c.group_data()),
        once(c.send("x", json!({"n": "3"}))),
        once(a.wait_all("x", None)),
    ]);
    assert_answer(
        &r[4],
        ack_msg(json!({"101": {"n": "1"}, "102": {"n": "2"}})),
        "reference (counts registered clients only)",
    );
    assert_answer(&o[4], wait(), "ours (103 has not registered yet)");
    let all = ack_msg(json!({"101": {"n": "1"}, "102": {"n": "2"}, "103": {"n": "3"}}));
    assert_answer(&r[7], all.clone(), "reference, complete");
    assert_answer(&o[7], all, "ours, complete");
}

#[test]
fn deviation_late_registration_sees_earlier_messages() {
    let (a, b) = g2("late");
    let (r, o) = both(&[
        once(a.group_data()),
        once(a.send("lava_vm_start", json!({"host_ip": "10.0.2.2"}))),
        once(a.send("x", json!({"v": "1"}))),
        once(b.group_data()),
        once(b.wait("lava_vm_start")),
        once(b.wait("x")),
        once(b.wait_all("x", Some("server"))),
    ]);
    assert_answer(
        &r[4],
        wait(),
        "reference: copied only to clients registered then",
    );
    assert_answer(
        &o[4],
        ack_msg(json!({"101": {"host_ip": "10.0.2.2"}})),
        "ours: the start gate",
    );
    assert_answer(&r[5], wait(), "reference");
    assert_answer(&o[5], ack_msg(json!({"101": {"v": "1"}})), "ours");
    // The reference's role wait-all then looks up the late client's copy: nack.
    assert_answer(&r[6], nack(), "reference, wait_all by role");
    assert_answer(
        &o[6],
        ack_msg(json!({"101": {"v": "1"}})),
        "ours, wait_all by role",
    );
}

#[test]
fn deviation_clear_group_counts_distinct_clients() {
    let (a, b) = g2("clear2");
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(a.send("x", json!({"v": "1"}))),
        once(a.clear()),
        once(a.clear()),
        once(b.wait("x")),
    ]);
    assert_answer(&r[4], ack(), "reference");
    assert_answer(&o[4], ack(), "ours");
    assert_answer(
        &r[5],
        nack(),
        "reference: a second clear by 101 deleted the group",
    );
    assert_answer(
        &o[5],
        ack_msg(json!({"101": {"v": "1"}})),
        "ours: 102 has not cleared",
    );
}

#[test]
fn deviation_sync_completing_request_is_acked_at_once() {
    let (a, b) = g2("syncnow");
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(a.sync("s")),
        once(b.sync("s")),
        call(a.sync("s")),
    ]);
    assert_answer(&r[3], wait(), "reference: the completing request waits");
    assert_answer(&o[3], ack_msg(json!("s")), "ours");
    assert_answer(&r[4], ack_msg(json!("s")), "reference");
    assert_answer(&o[4], ack_msg(json!("s")), "ours");
}

/// Found while comparing: in the reference a node that syncs the same id again before every
/// node picked up the previous round passes at once (the round is still counted full), and
/// the slowest node then waits forever. Ours starts a new round.
#[test]
fn deviation_sync_reuse_back_to_back() {
    let (a, b) = g2("syncagain");
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        once(a.sync("s")),
        once(b.sync("s")),
        call(a.sync("s")),
        // 5: a's second round, b has not synced again.
        once(a.sync("s")),
    ];
    let (r, o) = both(&steps);
    assert_answer(
        &r[5],
        ack_msg(json!("s")),
        "reference: passes the second sync alone",
    );
    assert_answer(&o[5], wait(), "ours: the second round waits for 102");
    // Ours then completes the second round normally.
    let mut server = ours();
    let mut more = steps.clone();
    more.extend([call(b.sync("s")), call(a.sync("s"))]);
    let answers = run_sequence(&server.addr, &more);
    assert_answer(&answers[6], ack_msg(json!("s")), "ours, 102's second round");
    assert_answer(&answers[7], ack_msg(json!("s")), "ours, 101's second round");
    assert_alive(&mut server, "our coordinator");
}

#[test]
fn deviation_sync_and_message_ids_do_not_collide() {
    let (a, b) = g2("collide");
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        once(a.sync("s")),
        call(b.sync("s")),
        call(a.sync("s")),
        once(a.wait("s")),
    ];
    let (r, o) = both(&steps);
    assert_answer(
        &r[5],
        ack_msg(json!("s")),
        "reference: the sync left a message",
    );
    assert_answer(&o[5], wait(), "ours: nobody sent under id s");
    // A send on the synced id crashes the reference (a str has no update()): ours only.
    let mut server = ours();
    let mut more = steps.clone();
    more.extend([
        once(a.send("s", json!({"k": "v"}))),
        once(b.wait("s")),
        once(a.sync("s")),
        call(b.sync("s")),
    ]);
    let answers = run_sequence(&server.addr, &more);
    assert_answer(&answers[6], ack(), "ours: send on a synced id");
    assert_answer(&answers[7], ack_msg(json!({"101": {"k": "v"}})), "ours");
    assert_answer(&answers[9], ack_msg(json!("s")), "ours: the id syncs again");
    assert_alive(&mut server, "our coordinator");
}

#[test]
fn deviation_complete_is_acked() {
    let (a, b) = g2("complete");
    let (r, o) = both(&[
        once(a.group_data()),
        once(a.request("complete")),
        once(b.group_data()),
    ]);
    assert_eq!(
        r[1],
        None,
        "reference closes without a reply: {}",
        show(&r[1])
    );
    assert_answer(&o[1], ack(), "ours");
    assert_eq!(r[2], o[2]);
}

#[test]
fn deviation_client_beyond_group_size_is_nacked() {
    let (a, b) = g2("full");
    let extra = Node::new("full", "199", "client", 2);
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(extra.group_data()),
        once(a.group_data()),
        once(extra.send("x", json!({}))),
    ]);
    let roles = json!({"response": "group_data", "roles": {"101": "server", "102": "client"}});
    assert_answer(&r[1], roles.clone(), "reference");
    assert_answer(
        &r[2],
        wait(),
        "reference registers a third client in a group of 2",
    );
    assert_answer(&o[2], nack(), "ours");
    assert_answer(&r[3], wait(), "reference: the group is no longer complete");
    assert_answer(&o[3], roles, "ours");
    assert_answer(&o[4], nack(), "ours: any request of the extra client");
}

/// Malformed requests the reference answers (or closes on) without crashing; ours: `nack`.
#[test]
fn deviation_malformed_requests_are_nacked() {
    let (a, b) = g2("malformed");
    let strip = |mut v: Value, field: &str| {
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        once(strip(a.wait("x"), "messageID")),            // 2
        once(strip(a.send("x", json!({})), "messageID")), // 3
        once(strip(a.sync("x"), "messageID")),            // 4
        once(a.send("x", json!({})).clone()),             // 5
        once(
            json!({"request": "lava_send", "group_name": "malformed", "client_name": "101",
                    "role": "server", "hostname": "h", "messageID": 5, "message": {}}),
        ), // 6
        Step::raw("{\"request\": \"lava_send\""),         // 7: not JSON
        Step::raw(""),                                    // 8: empty body
        once(b.wait("x")),                                // 9
    ];
    let (r, o) = both(&steps);
    assert_answer(&r[2], wait(), "reference: lava_wait without messageID");
    assert_answer(&r[3], ack(), "reference: lava_send without messageID");
    assert_answer(&r[4], wait(), "reference: lava_sync without messageID");
    assert_answer(&r[6], ack(), "reference: a numeric messageID");
    assert_eq!(r[7], None, "reference closes on bad JSON: {}", show(&r[7]));
    assert_eq!(
        r[8],
        None,
        "reference closes on an empty body: {}",
        show(&r[8])
    );
    for i in [2, 3, 4, 6, 7, 8] {
        assert_answer(&o[i], nack(), &format!("ours, step {i}"));
    }
    assert_answer(&r[9], ack_msg(json!({"101": {}})), "reference");
    assert_answer(&o[9], ack_msg(json!({"101": {}})), "ours");
}

/// Frame-level oddities that Python's reader tolerates: it parses the header with
/// `int(x, 16)` (spaces and `0x` allowed) and reads 4096-byte blocks until it has counted past
/// the length (a body shorter than its header passes). Malformed for ours: `nack`.
#[test]
fn deviation_malformed_frames_are_nacked() {
    let (a, b) = g2("frames");
    let send = |id: &str| lava_protocol::json::to_ascii_string(&a.send(id, json!({"k": "v"})));
    let (sp, ox, short) = (send("spaces"), send("0x"), send("short"));
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        Step::raw(sp.clone()).header(format!("{:>8x}", sp.len())),
        Step::raw(ox.clone()).header(format!("0x{:06X}", ox.len())),
        Step::raw(short.clone()).header(format!("{:08X}", short.len() + 100)),
        once(b.wait("spaces")),
        once(b.wait("0x")),
        once(b.wait("short")),
    ];
    let (r, o) = both(&steps);
    for i in 2..=4 {
        assert_answer(&r[i], ack(), &format!("reference, step {i}"));
        assert_answer(&o[i], nack(), &format!("ours, step {i}"));
    }
    for i in 5..=7 {
        assert_answer(&r[i], ack_msg(json!({"101": {"k": "v"}})), "reference");
        assert_answer(&o[i], wait(), "ours: the malformed sends were not applied");
    }
}

/// Bytes after the frame's body: the reference's reader takes them into the body and fails
/// to parse it (closed without a reply; the send is not applied). REFERENCE.md's decided rule
/// for malformed input is `nack`; the request must not be applied.
#[test]
fn trailing_bytes_after_the_frame_are_not_applied() {
    let (a, b) = g2("trailing");
    let body = lava_protocol::json::to_ascii_string(&a.send("trailing", json!({"k": "v"})));
    let steps = vec![
        once(a.group_data()),
        once(b.group_data()),
        Step::raw(format!("{body}garbage")).header(format!("{:08X}", body.len())),
        once(b.wait("trailing")),
    ];
    let (r, o) = both(&steps);
    assert_eq!(r[2], None, "reference: {}", show(&r[2]));
    assert_answer(&r[3], wait(), "reference: not applied");
    assert!(
        matches!(response(&o[2]), Some("nack") | None),
        "ours answered {} to a frame followed by extra bytes (reference: closed without a \
         reply; decided rule: nack)",
        show(&o[2])
    );
    assert_answer(&o[3], wait(), "ours: the send must not be applied");
}

/// `aggregate` (legacy result bundles; LAVA's dispatcher refuses to send it): the reference
/// collects bundles (`ack` for a sub-job, `wait` for sub_id `N.0` until all are in), ours
/// answers `nack` (issue 2: "aggregate (may answer nack)").
#[test]
fn deviation_aggregate_is_nacked() {
    let (a, b) = g2("aggregate");
    let (r, o) = both(&[
        once(a.group_data()),
        once(b.group_data()),
        once(a.body(json!({"request": "aggregate", "bundle": {"x": 1}, "sub_id": "7.1"}))),
        once(b.body(json!({"request": "aggregate", "bundle": {"y": 2}, "sub_id": "7.0"}))),
        once(a.body(json!({"request": "aggregate", "bundle": {"x": 1}}))),
        once(a.body(json!({"request": "aggregate"}))),
        once(a.send("after", json!({}))),
        once(b.wait("after")),
    ]);
    assert_answer(&r[2], ack(), "reference: a bundle of a sub-job");
    assert_answer(
        &r[3],
        wait(),
        "reference: sub_id N.0 waits for the other bundles",
    );
    assert_answer(&r[4], nack(), "reference: no sub_id");
    assert_answer(&r[5], nack(), "reference: no bundle");
    for (i, answer) in o.iter().enumerate().take(6).skip(2) {
        assert_answer(answer, nack(), &format!("ours, step {i}"));
    }
    assert_answer(&r[7], ack_msg(json!({"101": {}})), "reference");
    assert_answer(&o[7], ack_msg(json!({"101": {}})), "ours");
}

#[test]
fn deviation_nack_carries_an_error() {
    let (a, _) = g2("why");
    let r = reference();
    let o = ours();
    let body = lava_protocol::json::to_ascii_string(&a.request("fly"));
    let ra = exchange(&r.addr, &body, &Delivery::OneWrite).unwrap();
    let oa = exchange(&o.addr, &body, &Delivery::OneWrite).unwrap();
    assert_answer(&ra, nack(), "reference");
    let oa = oa.expect("a reply");
    assert_eq!(oa["response"], "nack", "{oa}");
    let error = oa["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "our nack says why in `error`: {oa}");
    assert_eq!(oa.as_object().unwrap().len(), 2, "{oa}");
}

// ---------------------------------------------------------------------------------------------
// Sequences that crash the reference (REFERENCE.md): never sent to it. Ours answers and
// keeps serving, and nothing stored is lost.

/// A group with a stored message, to check after each assault that nothing was lost.
fn stored_group(server: &Server) -> (Node, Node) {
    let (a, b) = g2("survivor");
    let answers = run_sequence(
        &server.addr,
        &[
            once(a.group_data()),
            once(b.group_data()),
            once(a.send("kept", json!({"v": "1"}))),
        ],
    );
    assert_answer(&answers[2], ack(), "setting up");
    (a, b)
}

#[track_caller]
fn assert_still_serving(server: &mut Server, b: &Node, what: &str) {
    assert_alive(server, &format!("our coordinator (after {what})"));
    let answers = run_sequence(&server.addr, &[once(b.wait("kept"))]);
    assert_answer(
        &answers[0],
        ack_msg(json!({"101": {"v": "1"}})),
        &format!("stored data after {what}"),
    );
}

#[test]
fn reference_crashers_are_answered_by_ours() {
    let mut server = ours();
    let (_, b) = stored_group(&server);
    let nacked: Vec<(&str, String)> = vec![
        (
            "a request without group_name",
            json!({"request": "lava_send", "client_name": "1", "role": "r", "hostname": "h",
                   "messageID": "m", "message": {}})
            .to_string(),
        ),
        (
            "a non-integer group_size",
            json!({"request": "group_data", "group_name": "g-int", "client_name": "1",
                   "role": "r", "hostname": "h", "group_size": "two"})
            .to_string(),
        ),
        (
            "a fractional group_size",
            json!({"request": "group_data", "group_name": "g-frac", "client_name": "1",
                   "role": "r", "hostname": "h", "group_size": 2.5})
            .to_string(),
        ),
        ("a bare JSON number", "42".into()),
        ("a bare JSON string", "\"request\"".into()),
        ("JSON null", "null".into()),
    ];
    for (what, body) in &nacked {
        let answer = exchange(&server.addr, body, &Delivery::OneWrite)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response(&answer), Some("nack"), "{what}: {}", show(&answer));
        assert_still_serving(&mut server, &b, what);
    }
}

/// A UTF-8 character split across two reads (the reference decodes each read on its own and
/// dies) is a valid request for ours.
#[test]
fn reference_crasher_utf8_split_across_reads() {
    let mut server = ours();
    let (a, b) = stored_group(&server);
    let body = serde_json::to_string(&a.send("utf8", json!({"k": "ü€😀"}))).unwrap();
    let cut = body.find('€').unwrap() + 1; // inside the three bytes of '€'
    let answer = exchange(
        &server.addr,
        &body,
        &Delivery::Chunks(vec![cut, body.len()]),
    )
    .unwrap();
    assert_answer(&answer, ack(), "send split inside a character");
    let answers = run_sequence(&server.addr, &[once(b.wait("utf8"))]);
    assert_answer(&answers[0], ack_msg(json!({"101": {"k": "ü€😀"}})), "wait");
    assert_still_serving(&mut server, &b, "a split character");
}

/// A 6000-byte request arriving in 1448-byte segments (the reference counts 4096-byte blocks
/// per read, stops early and drops it).
#[test]
fn reference_crasher_request_in_small_segments() {
    let mut server = ours();
    let (a, b) = stored_group(&server);
    let message = json!({"blob": "z".repeat(5700)});
    let body = lava_protocol::json::to_ascii_string(&a.send("seg", message.clone()));
    assert!(body.len() > 5800 && body.len() < 6100, "{}", body.len());
    let answer = exchange(&server.addr, &body, &Delivery::Chunks(vec![1448])).unwrap();
    assert_answer(&answer, ack(), "segmented send");
    let answers = run_sequence(&server.addr, &[once(b.wait("seg"))]);
    assert_answer(&answers[0], ack_msg(json!({"101": message})), "wait");
    assert_still_serving(&mut server, &b, "a segmented request");
}

/// A client that resets its connection before reading the reply (kills the reference).
#[test]
fn reference_crasher_client_reset() {
    let mut server = ours();
    let (a, b) = stored_group(&server);
    for i in 0..20 {
        let body = lava_protocol::json::to_ascii_string(&a.send(&format!("r{i}"), json!({})));
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        let frame = lava_protocol::frame::encode(&body);
        if i % 2 == 0 {
            // Half a frame, then gone.
            stream.write_all(&frame[..frame.len() / 2]).unwrap();
        } else {
            stream.write_all(&frame).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            // Give the reply time to arrive unread: closing then sends a reset.
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stream);
    }
    assert_still_serving(&mut server, &b, "client resets");
}

/// A request without `hostname` or `role` from a new client (found while comparing: the
/// reference dies with a KeyError). Ours answers and keeps serving.
#[test]
fn reference_crasher_missing_hostname_or_role() {
    let mut server = ours();
    let (_, b) = stored_group(&server);
    for (what, want, body) in [
        (
            "no hostname",
            Some("group_data"),
            json!({"request": "group_data", "group_name": "nohost", "client_name": "1",
                   "role": "r", "group_size": 1}),
        ),
        (
            "no role",
            Some("nack"),
            json!({"request": "group_data", "group_name": "norole", "client_name": "1",
                   "hostname": "h", "group_size": 1}),
        ),
    ] {
        let body = body.to_string();
        let answer = exchange(&server.addr, &body, &Delivery::OneWrite).unwrap();
        // The hostname is informational; the role is needed to register.
        assert_eq!(response(&answer), want, "{what}: {}", show(&answer));
        assert_still_serving(&mut server, &b, what);
    }
}

/// An empty `group_name` or `client_name`: the reference answers `nack` (it tests the names
/// for truth). Ours must too: not listed as a deviation, and REFERENCE.md's rule for malformed
/// input is `nack`. Empty message ids and roles are equal on both (differential test).
#[test]
fn empty_group_or_client_name_is_nacked() {
    let steps = vec![
        once(Node::new("", "1", "r", 1).group_data()),
        once(Node::new("named", "", "r", 1).group_data()),
        once(Node::new("", "1", "r", 1).send("m", json!({}))),
    ];
    let (r, o) = both(&steps);
    for i in 0..steps.len() {
        assert_answer(&r[i], nack(), &format!("reference, step {i}"));
        assert!(
            same_answer(&o[i], &r[i]),
            "step {i}: {}\n  reference: {}\n  ours:      {}",
            steps[i].body,
            show(&r[i]),
            show(&o[i])
        );
    }
}
