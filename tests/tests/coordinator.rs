//! Process-level tests of the real `lava-coordinator` binary over loopback: blocking,
//! concurrency, bad input, misbehaving clients, shutdown.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use lava_multinode_tests::net::reset;
use lava_multinode_tests::{
    raw_exchange, start_coordinator, start_coordinator_with_config, wait_for_status,
    wait_until_held, Server, STATE_DEADLINE,
};
use lava_protocol::{Reply, Request, RequestKind, Response};
use serde_json::json;

fn req(group: &str, client: &str, size: u32, kind: RequestKind) -> Request {
    let mut r = Request::new(group, client, "node", kind);
    r.group_size = Some(size);
    r.hostname = Some("test-host".into());
    r
}

fn sync(id: &str) -> RequestKind {
    RequestKind::Sync {
        id: id.into(),
        message: json!({}),
    }
}

/// Parses a raw reply frame (one whole frame, nothing after it).
fn parse_frame(bytes: &[u8]) -> Reply {
    let body = lava_protocol::frame::FrameDecoder::new(usize::MAX)
        .feed(bytes)
        .unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
        .unwrap_or_else(|| panic!("short reply: {bytes:?}"));
    Reply::parse(&body).unwrap()
}

/// The server still answers, and what `client` sent earlier is still there.
fn assert_serving(server: &Server, group: &str) {
    let reply = server
        .client()
        .call(&req(
            group,
            "probe",
            10,
            RequestKind::Wait { id: "kept".into() },
        ))
        .expect("server answers");
    assert_eq!(reply, Reply::ack_message(json!({"keeper": {"v": "1"}})));
}

fn store_probe_message(server: &Server, group: &str) {
    let reply = server
        .client()
        .call(&req(
            group,
            "keeper",
            10,
            RequestKind::Send {
                id: "kept".into(),
                message: json!({"v": "1"}),
            },
        ))
        .unwrap();
    assert_eq!(reply, Reply::ack());
}

#[test]
fn a_blocking_sync_of_16_nodes_releases_everyone_at_once() {
    let server = start_coordinator(&[]);
    let nodes = 16;
    let barrier = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|i| {
            let client = server.client();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut times = Vec::new();
                for round in 0..5 {
                    barrier.wait();
                    let start = Instant::now();
                    let mut r = req(
                        "g16",
                        &format!("n{i}"),
                        nodes as u32,
                        sync(&format!("round{round}")),
                    );
                    r.block = Some(10.0);
                    let reply = client.call(&r).unwrap();
                    assert_eq!(reply.response, Response::Ack, "{reply:?}");
                    times.push(start.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    // Generous for a debug build on a busy 2-core machine; the benchmark measures release.
    assert!(median < Duration::from_millis(500), "median {median:?}");
}

#[test]
fn block_answers_wait_when_the_time_is_up_and_is_capped() {
    let server = start_coordinator_with_config(Some(r#"{"block_max": 0.5}"#), &[]);
    let mut r = req("gb", "a", 2, RequestKind::Wait { id: "never".into() });
    r.block = Some(60.0);
    let start = Instant::now();
    let reply = server.client().call(&r).unwrap();
    let took = start.elapsed();
    assert!(reply.is_wait());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_blocked_wait_is_answered_the_moment_the_message_is_sent() {
    let server = start_coordinator(&[]);
    let client = server.client();
    let waiter = thread::spawn(move || {
        let mut r = req("gw", "b", 2, RequestKind::Wait { id: "go".into() });
        r.block = Some(20.0);
        let reply = client.call(&r).unwrap();
        (reply, Instant::now())
    });
    wait_until_held(&server.addr, "gw", "b", "lava_wait go", STATE_DEADLINE);
    let send = RequestKind::Send {
        id: "go".into(),
        message: json!({"ip": "10.0.2.2", "note": "ünïcødé"}),
    };
    let sent_at = Instant::now();
    assert_eq!(
        server.client().call(&req("gw", "a", 2, send)).unwrap(),
        Reply::ack()
    );
    let (reply, answered_at) = waiter.join().unwrap();
    assert_eq!(
        reply,
        Reply::ack_message(json!({"a": {"ip": "10.0.2.2", "note": "ünïcødé"}}))
    );
    assert!(answered_at >= sent_at, "it did block until the send");
    assert!(sent_at.elapsed() < Duration::from_secs(2));
}

#[test]
fn plain_lava_requests_are_not_held_unless_the_operator_says_so() {
    let server = start_coordinator(&[]);
    let start = Instant::now();
    let reply = server.client().call(&req("gp", "a", 2, sync("s"))).unwrap();
    assert!(reply.is_wait());
    assert!(start.elapsed() < Duration::from_millis(500));

    let held = start_coordinator_with_config(Some(r#"{"hold_lava_requests": 0.4}"#), &[]);
    let start = Instant::now();
    let reply = held.client().call(&req("gp", "a", 2, sync("s"))).unwrap();
    assert!(reply.is_wait());
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn malformed_frames_and_fields_get_a_nack_and_harm_nobody() {
    let server = start_coordinator(&[]);
    store_probe_message(&server, "gm");
    let frame = |body: &str| {
        let mut v = format!("{:08X}", body.len()).into_bytes();
        v.extend_from_slice(body.as_bytes());
        v
    };
    let base = r#""group_name": "gm", "client_name": "x", "role": "r", "group_size": 2"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("non-hex header", b"0000001G{}".to_vec()),
        ("short header", b"0000".to_vec()),
        (
            "length beyond the body",
            b"00000100{\"request\": \"group_data\"}".to_vec(),
        ),
        ("huge length", b"FFFFFFFF{}".to_vec()),
        (
            "lower-case hex, invalid JSON",
            b"0000000a{not json}".to_vec(),
        ),
        (
            "invalid UTF-8",
            [b"00000004".as_slice(), &[0xff, 0xfe, 0x80, 0x81]].concat(),
        ),
        ("JSON array", frame("[1, 2]")),
        ("bare number", frame("42")),
        ("JSON string", frame("\"lava_send\"")),
        ("null", frame("null")),
        ("empty body", frame("")),
        ("no request", frame(&format!("{{{base}}}"))),
        (
            "unknown request",
            frame(&format!(r#"{{"request": "fly", {base}}}"#)),
        ),
        (
            "request not a string",
            frame(&format!(r#"{{"request": 7, {base}}}"#)),
        ),
        (
            "no group_name",
            frame(r#"{"request": "group_data", "client_name": "x", "role": "r", "group_size": 2}"#),
        ),
        (
            "no client_name",
            frame(
                r#"{"request": "group_data", "group_name": "gm2", "role": "r", "group_size": 2}"#,
            ),
        ),
        (
            "group_size not a number",
            frame(
                r#"{"request": "group_data", "group_name": "gm3", "client_name": "x", "role": "r", "group_size": "two"}"#,
            ),
        ),
        (
            "group_size negative",
            frame(
                r#"{"request": "group_data", "group_name": "gm3", "client_name": "x", "role": "r", "group_size": -2}"#,
            ),
        ),
        (
            "new group without size",
            frame(
                r#"{"request": "group_data", "group_name": "gm4", "client_name": "x", "role": "r"}"#,
            ),
        ),
        (
            "messageID missing",
            frame(&format!(r#"{{"request": "lava_send", {base}}}"#)),
        ),
        (
            "messageID a number",
            frame(&format!(
                r#"{{"request": "lava_wait", "messageID": 5, {base}}}"#
            )),
        ),
        (
            "waitrole a list",
            frame(&format!(
                r#"{{"request": "lava_wait_all", "messageID": "m", "waitrole": [], {base}}}"#
            )),
        ),
        (
            "block negative",
            frame(&format!(
                r#"{{"request": "lava_wait", "messageID": "m", "block": -1, {base}}}"#
            )),
        ),
        (
            "block a string",
            frame(&format!(
                r#"{{"request": "lava_wait", "messageID": "m", "block": "1", {base}}}"#
            )),
        ),
        (
            "role an object",
            frame(
                r#"{"request": "group_data", "group_name": "gm5", "client_name": "x", "role": {}, "group_size": 2}"#,
            ),
        ),
        (
            "aggregate",
            frame(&format!(r#"{{"request": "aggregate", {base}}}"#)),
        ),
        (
            "deeply nested",
            frame(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        ),
    ];
    for (what, bytes) in cases {
        let reply = raw_exchange(&server.addr, &bytes, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let reply = parse_frame(&reply);
        assert_eq!(reply.response, Response::Nack, "{what}: {reply:?}");
        assert!(
            reply.error.as_deref().is_some_and(|e| !e.is_empty()),
            "{what}: nack says why"
        );
        if what == "huge length" {
            // The setting to raise is named.
            assert!(
                reply
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("max_request_bytes")),
                "{reply:?}"
            );
        }
    }
    assert_serving(&server, "gm");
    let log = server.log_text();
    assert!(
        log.contains("WARN") && log.contains("127.0.0.1:"),
        "bad input is logged with the peer:\n{log}"
    );
}

#[test]
fn a_request_split_into_small_segments_is_read_whole() {
    let server = start_coordinator(&[]);
    let big = "é".repeat(3000); // 6000 bytes of UTF-8, split inside characters below
    let body = req(
        "gs",
        "a",
        1,
        RequestKind::Send {
            id: "big".into(),
            message: json!({ "v": big }),
        },
    )
    .to_json();
    let body = body.replace("\\u00e9", "é");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut bytes = format!("{:08X}", body.len()).into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    for chunk in bytes.chunks(1447) {
        stream.write_all(chunk).unwrap();
        // Not synchronisation: a pause between writes, so that the chunks arrive as
        // separate segments.
        thread::sleep(Duration::from_millis(5));
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut reply).unwrap();
    assert_eq!(parse_frame(&reply), Reply::ack());
    let reply = server
        .client()
        .call(&req("gs", "a", 1, RequestKind::Wait { id: "big".into() }))
        .unwrap();
    assert_eq!(
        reply.message.unwrap()["a"]["v"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        3000
    );
}

#[test]
fn idle_and_half_sent_connections_block_nobody_and_time_out() {
    let server = start_coordinator_with_config(Some(r#"{"read_timeout": 1}"#), &[]);
    store_probe_message(&server, "gi");
    // 50 connections that send nothing, 50 that send half a request.
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    let mut half: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(b"00000100{\"request\": ").unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    assert_serving(&server, "gi");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    // The half-sent ones are told why after the read timeout.
    half[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut half[0], &mut reply).unwrap();
    let reply = parse_frame(&reply);
    assert_eq!(reply.response, Response::Nack);
    assert!(reply.error.unwrap().contains("within"));
    idle.clear();
    half.clear();
    assert_serving(&server, "gi");
}

#[test]
fn clients_that_reset_or_vanish_cost_only_their_own_request() {
    let mut server = start_coordinator(&[]);
    store_probe_message(&server, "gr");
    let frame = |r: &Request| lava_protocol::frame::encode(&r.to_json());
    for _ in 0..20 {
        // A reset before the request is complete.
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(&frame(&req("gr", "x", 2, RequestKind::GroupData))[..12])
            .unwrap();
        reset(s);
        // A reset after the request, before reading the reply.
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(&frame(&req("gr", "keeper0", 2, RequestKind::Complete)))
            .unwrap();
        reset(s);
        // A reset while the request is held.
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let mut held = req("gr", "keeper", 2, RequestKind::Wait { id: "never".into() });
        held.block = Some(0.2);
        s.write_all(&frame(&held)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        reset(s);
    }
    // Not synchronisation: the held requests' block (0.2 s) must run out, so that the
    // coordinator answers them on connections that were reset...
    thread::sleep(Duration::from_millis(400));
    // ... and it has: it holds none of them any more.
    wait_for_status(
        &server.addr,
        None,
        "holding no request",
        STATE_DEADLINE,
        |s| s["counters"]["held"] == 0,
    );
    assert!(server.is_running());
    assert_serving(&server, "gr");
}

#[test]
fn six_hundred_concurrent_clients_all_get_their_answer() {
    let server = start_coordinator(&[]);
    let n = 600;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let client = server
                .client()
                .with_connect_timeout(Duration::from_secs(20));
            let barrier = barrier.clone();
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    barrier.wait();
                    // Every node syncs with blocking, then sends; nobody may fail.
                    let mut r = req("g600", &format!("n{i}"), n as u32, sync("all"));
                    r.block = Some(20.0);
                    let reply = client.call(&r).map_err(|e| format!("sync: {e}"))?;
                    let sent = client
                        .call(&req(
                            "g600",
                            &format!("n{i}"),
                            n as u32,
                            RequestKind::Send {
                                id: "done".into(),
                                message: json!({ "i": i }),
                            },
                        ))
                        .map_err(|e| format!("send: {e}"))?;
                    Ok::<_, String>((reply, sent))
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        let (reply, sent) = h.join().unwrap().unwrap_or_else(|e| {
            panic!(
                "connection error: {e}\n{}",
                server
                    .log_text()
                    .lines()
                    .filter(|l| !l.contains("DEBUG"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(reply.response, Response::Ack);
        assert_eq!(sent, Reply::ack());
    }
    let mut r = req(
        "g600",
        "n0",
        n as u32,
        RequestKind::WaitAll {
            id: "done".into(),
            role: None,
        },
    );
    r.block = Some(5.0);
    let reply = server.client().call(&r).unwrap();
    assert_eq!(reply.message.unwrap().as_object().unwrap().len(), n);
}

#[test]
fn sigterm_answers_held_requests_and_exits_cleanly() {
    let mut server = start_coordinator(&[]);
    let client = server.client();
    let held = thread::spawn(move || {
        let mut r = req("gt", "a", 2, sync("s"));
        r.block = Some(30.0);
        client.call(&r)
    });
    wait_until_held(&server.addr, "gt", "a", "lava_sync s", STATE_DEADLINE);
    let start = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let reply = held
        .join()
        .unwrap()
        .expect("the held request got an answer");
    assert!(reply.is_wait(), "{reply:?}");
    assert!(server.log_text().contains("SIGTERM"));
}

#[test]
fn an_idle_group_expires_and_is_logged() {
    let server = start_coordinator_with_config(Some(r#"{"group_expiry": 0.3}"#), &[]);
    let stored = Instant::now();
    store_probe_message(&server, "ge");
    // The group leaves the coordinator's status view when it expires...
    wait_for_status(
        &server.addr,
        None,
        "forgetting group ge",
        STATE_DEADLINE,
        |s| {
            s["groups"]
                .as_array()
                .is_some_and(|g| g.iter().all(|g| g["name"] != "ge"))
        },
    );
    // ... not before it was idle for group_expiry.
    assert!(
        stored.elapsed() >= Duration::from_millis(300),
        "{:?}",
        stored.elapsed()
    );
    let reply = server
        .client()
        .call(&req(
            "ge",
            "probe",
            2,
            RequestKind::Wait { id: "kept".into() },
        ))
        .unwrap();
    assert!(reply.is_wait(), "the group was forgotten: {reply:?}");
    assert!(server.log_text().contains("expired"));
}

#[test]
fn the_real_client_sees_the_lava_reply_layout() {
    let server = start_coordinator(&[]);
    let body = r#"{"request": "group_data", "group_name": "gl", "client_name": "1", "role": "r", "hostname": "h", "group_size": 1}"#;
    let reply = raw_exchange(
        &server.addr,
        &lava_protocol::frame::encode(body),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        "0000002F{\"response\": \"group_data\", \"roles\": {\"1\": \"r\"}}"
    );
}

fn status(server: &Server, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(lava_multinode_tests::bin("lava-coordinator"))
        .args([
            "--config",
            "/nonexistent.conf",
            "status",
            "--address",
            &server.addr,
        ])
        .args(args)
        .env_remove("LAVA_COORDINATOR_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_shows_who_waits_on_what() {
    let server = start_coordinator(&[]);
    let c = server.client();
    c.call(&req(
        "job42",
        "a",
        3,
        RequestKind::Send {
            id: "ready".into(),
            message: json!({"ip": "1"}),
        },
    ))
    .unwrap();
    let blocked: Vec<_> = [
        ("a", sync("s1")),
        ("b", RequestKind::Wait { id: "go".into() }),
    ]
    .into_iter()
    .map(|(who, kind)| {
        let c = server.client();
        let mut r = req("job42", who, 3, kind);
        r.block = Some(5.0);
        thread::spawn(move || c.call(&r))
    })
    .collect();
    wait_until_held(&server.addr, "job42", "a", "lava_sync s1", STATE_DEADLINE);
    wait_until_held(&server.addr, "job42", "b", "lava_wait go", STATE_DEADLINE);
    let (code, out, err) = status(&server, &["--group", "job42"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("group job42: 2/3 registered"), "{out}");
    let line = |who: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(who))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("a ").contains("ready") && line("a ").contains("lava_sync s1 (for"),
        "{out}"
    );
    assert!(line("b ").contains("lava_wait go (for"), "{out}");
    let (code, json_out, _) = status(&server, &["--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["counters"]["held"], 2);
    assert_eq!(v["groups"][0]["blocked"].as_array().unwrap().len(), 2);
    let (code, _, err) = status(&server, &["--group", "nope"], &[]);
    assert_eq!(code, 1, "{err}");
    for h in blocked {
        let reply = h.join().unwrap().unwrap();
        assert!(reply.is_wait());
    }
    let dead = start_coordinator(&[]);
    let addr = dead.addr.clone();
    drop(dead);
    let out = std::process::Command::new(lava_multinode_tests::bin("lava-coordinator"))
        .args(["status", "--address", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn access_control_refuses_with_a_nack_and_a_log_line() {
    let lab = r#"{"allow": ["127.0.0.0/8"], "secret": "lab-s3cret"}"#;
    let server = start_coordinator_with_config(Some(lab), &[]);
    let c = server.client();
    let mut r = req("acl", "a", 2, RequestKind::GroupData);
    // No lab secret, a wrong one, the right one.
    let reply = c.call(&r).unwrap();
    assert_eq!(reply.response, Response::Nack);
    assert!(reply.error.unwrap().contains("secret"));
    r.secret = Some("lab-s3cre7".into());
    assert_eq!(c.call(&r).unwrap().response, Response::Nack);
    r.secret = Some("lab-s3cret".into());
    // The group is created with its own secret.
    r.group_secret = Some("group-one".into());
    assert!(c.call(&r).unwrap().is_wait());
    // Another group's secret, or none, does not open it.
    let mut b = req("acl", "b", 2, RequestKind::GroupData);
    b.secret = Some("lab-s3cret".into());
    assert_eq!(c.call(&b).unwrap().response, Response::Nack);
    b.group_secret = Some("group-two".into());
    assert_eq!(c.call(&b).unwrap().response, Response::Nack);
    b.group_secret = Some("group-one".into());
    assert_eq!(c.call(&b).unwrap().response, Response::GroupData);
    // status needs the lab secret too.
    let (code, _, err) = status(&server, &[], &[]);
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = status(&server, &[], &[("LAVA_COORDINATOR_SECRET", "lab-s3cret")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("nacks 2") && out.contains("refused 3"),
        "{out}"
    );
    let log = server.log_text();
    assert!(
        log.contains("refused") && log.contains("127.0.0.1:"),
        "{log}"
    );

    // A network that is not allowed; an exempt network needs no secret.
    let elsewhere = start_coordinator_with_config(Some(r#"{"allow": ["127.0.0.2/32"]}"#), &[]);
    let reply = elsewhere
        .client()
        .call(&req("x", "a", 1, RequestKind::GroupData))
        .unwrap();
    assert_eq!(reply.response, Response::Nack);
    assert!(reply.error.unwrap().contains("not allowed"));
    let exempt = start_coordinator_with_config(
        Some(r#"{"secret": "lab", "secret_exempt": ["127.0.0.0/8"]}"#),
        &[],
    );
    let reply = exempt
        .client()
        .call(&req("x", "a", 1, RequestKind::GroupData))
        .unwrap();
    assert_eq!(reply.response, Response::GroupData);
}

/// RSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_groups_and_messages_meets_the_limits_and_bounded_memory() {
    let config = r#"{"max_groups": 2000, "max_ids_per_group": 50, "max_group_bytes": 20000, "max_total_bytes": 4000000}"#;
    let server = start_coordinator_with_config(Some(config), &["--state", ":memory:"]);
    let pid = server.child.id();
    let before = rss_kib(pid);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let c = server.client();
            thread::spawn(move || {
                let mut counts = [0usize; 2]; // [ack, nack]
                for i in 0..3000 {
                    let group = format!("flood{}", (w * 3000 + i) % 2600);
                    let id = format!("m{}", i % 80);
                    let kind = RequestKind::Send {
                        id,
                        message: json!({ "pad": "x".repeat(200) }),
                    };
                    let reply = c
                        .call(&req(&group, &format!("c{w}"), 16, kind))
                        .expect("every request answered");
                    counts[usize::from(reply.response == Response::Nack)] += 1;
                }
                counts
            })
        })
        .collect();
    let (mut acks, mut nacks) = (0, 0);
    for h in workers {
        let [a, n] = h.join().unwrap();
        acks += a;
        nacks += n;
    }
    assert!(acks > 0 && nacks > 0, "acks {acks}, nacks {nacks}");
    let v: serde_json::Value = {
        let out = std::process::Command::new(lava_multinode_tests::bin("lava-coordinator"))
            .args(["status", "--json", "--address", &server.addr])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2000, "max_groups holds");
    assert!(
        v["counters"]["stored_bytes"].as_u64().unwrap() <= 4_000_000,
        "max_total_bytes holds"
    );
    for g in groups {
        assert!(g["stored_bytes"].as_u64().unwrap() <= 20_000);
    }
    let grown = rss_kib(pid).saturating_sub(before);
    // 4 MB of data plus bookkeeping for 2000 groups; a bound, not a benchmark.
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_serving_after_flood(&server);
}

fn assert_serving_after_flood(server: &Server) {
    let reply = server
        .client()
        .call(&req(
            "flood0",
            "c0",
            16,
            RequestKind::Wait { id: "m0".into() },
        ))
        .unwrap();
    assert_eq!(reply.response, Response::Ack);
}

fn scrape(addr: &str, path: &str) -> String {
    try_scrape(addr, path).expect("the metrics endpoint answers")
}

/// The HTTP answer, or `None` when the connection was reset.
fn try_scrape(addr: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_requests_errors_and_wakeups() {
    let metrics_addr = format!("127.0.0.1:{}", lava_multinode_tests::free_port());
    let server = start_coordinator(&["--metrics", &metrics_addr]);
    assert!(lava_multinode_tests::wait_for_port(
        &metrics_addr,
        Duration::from_secs(5)
    ));
    let c = server.client();
    let waiter = {
        let c = server.client();
        thread::spawn(move || {
            let mut r = req("gm", "b", 2, RequestKind::Wait { id: "go".into() });
            r.block = Some(10.0);
            c.call(&r).unwrap()
        })
    };
    wait_until_held(&server.addr, "gm", "b", "lava_wait go", STATE_DEADLINE);
    let blocked = scrape(&metrics_addr, "/metrics");
    assert_eq!(metric(&blocked, "lava_coordinator_blocked_requests"), 1.0);
    c.call(&req(
        "gm",
        "a",
        2,
        RequestKind::Send {
            id: "go".into(),
            message: json!({}),
        },
    ))
    .unwrap();
    assert_eq!(waiter.join().unwrap().response, Response::Ack);
    c.call(&req("gm", "a", 2, RequestKind::GroupData)).unwrap();
    raw_exchange(&server.addr, b"0000000Xjunk", Duration::from_secs(5)).unwrap();
    raw_exchange(
        &server.addr,
        &lava_protocol::frame::encode("[]"),
        Duration::from_secs(5),
    )
    .unwrap();
    let text = scrape(&metrics_addr, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
    for (name, value) in [
        (
            "lava_coordinator_requests_total{request=\"lava_send\",response=\"ack\"}",
            1.0,
        ),
        (
            "lava_coordinator_requests_total{request=\"lava_wait\",response=\"ack\"}",
            1.0,
        ),
        (
            "lava_coordinator_requests_total{request=\"group_data\",response=\"group_data\"}",
            1.0,
        ),
        ("lava_coordinator_errors_total{kind=\"bad_frame\"}", 1.0),
        ("lava_coordinator_errors_total{kind=\"bad_request\"}", 1.0),
        ("lava_coordinator_groups", 1.0),
        ("lava_coordinator_clients", 2.0),
        ("lava_coordinator_blocked_requests", 0.0),
        ("lava_coordinator_wakeup_seconds_count", 1.0),
        ("lava_coordinator_wakeup_seconds_bucket{le=\"+Inf\"}", 1.0),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }
    assert!(
        metric(&text, "lava_coordinator_wakeup_seconds_bucket{le=\"0.1\"}") == 1.0,
        "woken within 100 ms"
    );
    assert!(scrape(&metrics_addr, "/other").starts_with("HTTP/1.1 404"));
}

/// Issue 15, finding 5: limits cannot be walked around. A `lava_send` refused because the
/// store is full leaves no group and no client behind; sync messages and names count against
/// the byte limits; the status view counts what is kept.
#[test]
fn refused_requests_leave_nothing_and_every_kept_byte_counts() {
    let config = r#"{"max_group_bytes": 700, "max_total_bytes": 1000}"#;
    let server = start_coordinator_with_config(Some(config), &["--state", ":memory:"]);
    let c = server.client();
    let stored = || {
        let (code, out, err) = status(&server, &["--json"], &[]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = &v["counters"];
        (
            c["groups"].as_u64().unwrap(),
            c["stored_bytes"].as_u64().unwrap(),
        )
    };
    let nack = |reply: Reply, limit: &str| {
        assert_eq!(reply.response, Response::Nack, "{reply:?}");
        assert!(reply.error.as_deref().unwrap().contains(limit), "{reply:?}");
    };
    let send = |n: usize| RequestKind::Send {
        id: "m".into(),
        message: json!({ "pad": "x".repeat(n) }),
    };
    assert_eq!(
        c.call(&req("fill", "a", 2, send(600))).unwrap(),
        Reply::ack()
    );
    let (groups, before) = stored();
    assert_eq!(groups, 1);
    // The store is full: the send is refused, and its group and client are not kept.
    nack(
        c.call(&req("walk", "a", 2, send(500))).unwrap(),
        "max_total_bytes",
    );
    // A sync message and names that do not fit.
    let sync = |n: usize| RequestKind::Sync {
        id: "s".into(),
        message: json!({ "pad": "y".repeat(n) }),
    };
    nack(
        c.call(&req("walk", "a", 2, sync(300))).unwrap(),
        "max_total_bytes",
    );
    nack(
        c.call(&req(&"g".repeat(800), "a", 2, RequestKind::GroupData))
            .unwrap(),
        "max_group_bytes",
    );
    nack(
        c.call(&req("fill", &"c".repeat(400), 2, RequestKind::GroupData))
            .unwrap(),
        "max_group_bytes",
    );
    assert_eq!(stored(), (1, before), "no group created, nothing more kept");
    // What is accepted is counted: a client's name and role, a sync's message.
    assert!(c.call(&req("fill", "b", 2, sync(10))).unwrap().is_wait());
    let (_, after) = stored();
    assert!(after >= before + 40, "{before} -> {after}");
}

/// Issue 15, finding 2, without a crash: a LAVA client (no `request_id`) held in a sync whose
/// connection is reset before the release reaches it asks again and gets the answer it
/// missed, rather than opening a round nobody else will join.
#[test]
fn a_sync_reply_lost_to_a_reset_is_answered_on_the_retry() {
    let server = start_coordinator_with_config(Some(r#"{"hold_lava_requests": 20}"#), &[]);
    let frame = |r: &Request| lava_protocol::frame::encode(&r.to_json());
    // a arrives first and is held; its connection is then reset.
    let mut a = TcpStream::connect(&server.addr).unwrap();
    a.write_all(&frame(&req("lost", "a", 2, sync("s"))))
        .unwrap();
    wait_until_held(&server.addr, "lost", "a", "lava_sync s", STATE_DEADLINE);
    reset(a);
    // b completes the round; the reply to a cannot be delivered.
    let client = lava_protocol::Client::new(server.addr.clone());
    assert_eq!(
        client
            .call(&req("lost", "b", 2, sync("s")))
            .unwrap()
            .response,
        Response::Ack
    );
    // The server tried a's reply and marked it lost once a's connection is done: the only
    // connection left is the status request that asks.
    lava_multinode_tests::wait_for_status(
        &server.addr,
        None,
        "a's reset connection finished",
        STATE_DEADLINE,
        |status| status["counters"]["connections"] == 1,
    );
    // a's retry (LAVA's client asks again after an empty reply) is the completed round.
    let started = Instant::now();
    let retry = client.call(&req("lost", "a", 2, sync("s"))).unwrap();
    assert_eq!(retry.response, Response::Ack, "{retry:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once, not held"
    );
}

/// The metrics endpoint goes through the server's accept loop: its connections count against
/// `max_connections_per_address` together with the protocol's, and a scrape over the limit is
/// answered 503 at once instead of taking a task. (From 127.0.0.2, so that the harness's own
/// probes from 127.0.0.1 do not count.)
#[test]
fn metrics_connections_count_against_the_address_limit() {
    use lava_multinode_tests::net::connect_from;
    use std::io::{Read as _, Write as _};
    const FROM: [u8; 4] = [127, 0, 0, 2];
    let metrics_port = lava_multinode_tests::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = start_coordinator_with_config(
        Some(r#"{"max_connections_per_address": 2}"#),
        &["--metrics", &metrics_addr],
    );
    let port = |addr: &str| addr.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    // The HTTP answer from 127.0.0.2, or `None` when the connection was reset.
    let scrape_from = || -> Option<String> {
        let mut s = connect_from(FROM, metrics_port).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    // The protocol connections being served, seen from 127.0.0.1 (not counted for .2).
    let serving = || {
        metric(
            &scrape(&metrics_addr, "/metrics"),
            "lava_coordinator_connections",
        )
    };
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::yield_now();
        }
    };
    until("the harness's probes are done", &|| serving() == 0.0);
    // Two half-sent requests hold 127.0.0.2's two places (until read_timeout).
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect_from(FROM, port(&server.addr)).unwrap();
            s.write_all(b"0000").unwrap();
            s
        })
        .collect();
    until("both held connections are served", &|| serving() == 2.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        // Refused: a 503, or the connection closed before the request was read.
        if scrape_from().is_none_or(|a| a.starts_with("HTTP/1.1 503")) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        // Until the server has accepted both held connections; it answers by itself.
        thread::yield_now();
    };
    assert!(
        refused,
        "a scrape over the address's limit was served:\n{}",
        server.log_text()
    );
    drop(held);
    until("the places came back", &|| {
        scrape_from().is_some_and(|a| a.starts_with("HTTP/1.1 200"))
    });
}
