//! Process-level tests of the coordinator under the faults of issue 15's soak: hostile
//! clients that announce large bodies and stall, one address that opens every connection,
//! a coordinator that is itself stopped (SIGSTOP), floods of bad connections.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use lava_multinode_tests::net::connect_from;
use lava_multinode_tests::{start_coordinator_with_config, Server};
use lava_protocol::{Reply, Request, RequestKind, Response};
use serde_json::json;

fn req(group: &str, client: &str, size: u32, kind: RequestKind) -> Request {
    let mut r = Request::new(group, client, "node", kind);
    r.group_size = Some(size);
    r
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

/// A group of `size` members runs its whole life (start barrier, a message, a sync, clear)
/// against `server`; returns how long it took.
fn run_good_group(server: &Server, group: &str, size: u32) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..size)
        .map(|i| {
            let client = server.client().with_io_timeout(Duration::from_secs(60));
            let group = group.to_owned();
            thread::spawn(move || {
                let name = format!("n{i}");
                let ask = |kind: RequestKind| -> Reply {
                    let mut r = req(&group, &name, size, kind);
                    r.block = Some(10.0);
                    loop {
                        let reply = client.call(&r).expect("the good group is answered");
                        if !reply.is_wait() {
                            return reply;
                        }
                    }
                };
                assert_eq!(ask(RequestKind::GroupData).response, Response::GroupData);
                if i == 0 {
                    let send = RequestKind::Send {
                        id: "go".into(),
                        message: json!({"k": "v"}),
                    };
                    assert_eq!(ask(send).response, Response::Ack);
                }
                let reply = ask(RequestKind::Wait { id: "go".into() });
                assert_eq!(reply.response, Response::Ack, "{reply:?}");
                let sync = RequestKind::Sync {
                    id: "done".into(),
                    message: json!({}),
                };
                assert_eq!(ask(sync).response, Response::Ack);
                assert_eq!(ask(RequestKind::ClearGroup).response, Response::Ack);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("good member");
    }
    start.elapsed()
}

/// Finding 6: connections that announce a large body and send most of it, then stall, hold
/// no more memory in all than `max_inflight_bytes` (plus a small first block each), and a
/// good group runs meanwhile.
#[test]
fn stalled_large_bodies_hold_only_the_inflight_budget() {
    const BUDGET: usize = 8 << 20;
    const COUNT: usize = 120;
    const ANNOUNCED: usize = 1 << 20;
    let config = format!(r#"{{"max_inflight_bytes": {BUDGET}}}"#);
    let server = start_coordinator_with_config(Some(&config), &["--state", ":memory:"]);
    let pid = server.child.id();
    let before = rss_kib(pid);
    // Each announces 1 MiB (the largest request) and sends all of it but the last byte.
    let body = vec![b' '; ANNOUNCED - 1];
    let mut stalled: Vec<(TcpStream, usize)> = (0..COUNT)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(format!("{ANNOUNCED:08X}").as_bytes()).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    // Push what the coordinator and the kernel take, for a while: the coordinator reads what
    // its budget allows, the rest stays in the sockets' buffers or here.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let mut progress = false;
        for (s, sent) in &mut stalled {
            while *sent < body.len() {
                match s.write(&body[*sent..]) {
                    Ok(n) => {
                        *sent += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("stalled connection closed early: {e}"),
                }
            }
        }
        if !progress {
            thread::sleep(Duration::from_millis(50));
        }
    }
    let pushed: usize = stalled.iter().map(|(_, sent)| sent).sum();
    // The good group is served while the budget is taken.
    let took = run_good_group(&server, "good6", 3);
    assert!(
        took < Duration::from_secs(5),
        "the good group took {took:?}"
    );
    let grown = rss_kib(pid).saturating_sub(before) as usize * 1024;
    let announced = COUNT * ANNOUNCED;
    eprintln!(
        "{COUNT} stalled connections announced {announced} bytes and pushed {pushed}; \
         RSS grew by {grown} bytes"
    );
    // The budget, the first blocks, and slack for the allocator and the good group.
    assert!(
        grown < BUDGET + COUNT * 4096 + (12 << 20),
        "RSS grew by {grown} bytes with {announced} announced (budget {BUDGET})"
    );
    assert!(grown < announced / 4);
    drop(stalled);
}

/// The coordinator's `status` answer, as JSON.
fn status_json(server: &Server) -> serde_json::Value {
    let body = r#"{"request": "status"}"#;
    let frame = format!("{:08X}{body}", body.len());
    let reply =
        lava_multinode_tests::raw_exchange(&server.addr, frame.as_bytes(), Duration::from_secs(5))
            .expect("status answers");
    serde_json::from_slice(&reply[8..]).expect("status is JSON")
}

/// A `status` request over a raw connection; returns how long the answer took.
fn status_time(server: &Server) -> Duration {
    let start = Instant::now();
    let body = r#"{"request": "status"}"#;
    let frame = format!("{:08X}{body}", body.len());
    let reply =
        lava_multinode_tests::raw_exchange(&server.addr, frame.as_bytes(), Duration::from_secs(5))
            .expect("status answers");
    assert!(
        String::from_utf8_lossy(&reply).contains("\"status\""),
        "{reply:?}"
    );
    start.elapsed()
}

/// Finding 7: one address that opens more connections than `max_connections_per_address`
/// is refused at once (nack naming the limit) and cannot take the slots of the others: a
/// good group from another address runs at full speed and `status` answers promptly.
#[test]
fn one_address_cannot_take_every_connection() {
    // max_connections 200: the per-address default is half of it, 100.
    let server = start_coordinator_with_config(
        Some(r#"{"max_connections": 200}"#),
        &["--state", ":memory:"],
    );
    // The hog, from 127.0.0.2: 300 connections that send 4 bytes of a header and stall.
    let mut hog: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 2], server.port).expect("hog connects");
            s.write_all(b"0000").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let took = status_time(&server);
    assert!(took < Duration::from_secs(2), "status took {took:?}");
    let took = run_good_group(&server, "good7", 4);
    assert!(
        took < Duration::from_secs(5),
        "the good group took {took:?}"
    );
    // The hog's connections over the limit were told why, at once.
    let mut refused = 0;
    for s in &mut hog {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut reply = Vec::new();
        let _ = std::io::Read::read_to_end(s, &mut reply);
        if String::from_utf8_lossy(&reply).contains("max_connections_per_address is 100") {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 200,
        "connections over the limit get a nack naming it"
    );
    let v = status_json(&server);
    assert_eq!(v["counters"]["over_limit"], json!(200), "{v}");
    let log = server.log_text();
    assert!(
        log.contains("127.0.0.2 holds max_connections_per_address (100) already"),
        "{log}"
    );
    drop(hog);
}

/// The `status` answer for one group, as JSON.
fn group_status(server: &Server, group: &str) -> serde_json::Value {
    let body = json!({"request": "status", "group": group}).to_string();
    let frame = format!("{:08X}{body}", body.len());
    let reply =
        lava_multinode_tests::raw_exchange(&server.addr, frame.as_bytes(), Duration::from_secs(10))
            .expect("status answers");
    let v: serde_json::Value = serde_json::from_slice(&reply[8..]).expect("status is JSON");
    v["groups"][0].clone()
}

fn signal(server: &Server, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.child.id().to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig}");
}

/// Finding 9: the time the coordinator itself was stopped (SIGSTOP) does not count against
/// leases: a member that kept asking is not failed after the coordinator comes back, while
/// one that really stopped asking still is, once its lease has run out in the coordinator's
/// running time.
#[test]
fn a_stopped_coordinator_does_not_blame_its_clients() {
    const LEASE: f64 = 2.0;
    let server = start_coordinator_with_config(None, &["--state", ":memory:"]);
    let wait = |client: &str| {
        let mut r = req(
            "frozen",
            client,
            3,
            RequestKind::Wait { id: "never".into() },
        );
        r.lease = Some(LEASE);
        r
    };
    let c = server.client().with_io_timeout(Duration::from_secs(30));
    // b asks once, with a lease, and never again.
    assert!(c.call(&wait("b")).unwrap().is_wait());
    // a keeps asking every 300 ms, as our tools do, through the freeze.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let c = c.clone();
        let stop = stop.clone();
        let r = wait("a");
        thread::spawn(move || {
            let mut replies = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                replies.push(c.call(&r).expect("a is answered"));
                thread::sleep(Duration::from_millis(300));
            }
            replies
        })
    };
    thread::sleep(Duration::from_millis(600));
    signal(&server, "STOP");
    thread::sleep(Duration::from_secs_f64(LEASE * 2.5));
    signal(&server, "CONT");
    // Right after: nobody is failed, a's pending request is answered `wait`.
    thread::sleep(Duration::from_millis(300));
    let g = group_status(&server, "frozen");
    assert_eq!(g["failed"], json!({}), "{g}");
    // b, which stopped asking, is failed once its lease ran out in running time; a is not.
    thread::sleep(Duration::from_secs_f64(LEASE + 1.5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies = asker.join().unwrap();
    let g = group_status(&server, "frozen");
    let failed = g["failed"].as_object().expect("failed members");
    assert!(failed.contains_key("b"), "{g}");
    assert!(!failed.contains_key("a"), "{g}");
    assert!(
        replies.iter().all(|r| r.is_wait()),
        "a kept asking and got only `wait`: {replies:?}"
    );
    let log = server.log_text();
    assert!(log.contains("the coordinator did not run for"), "{log}");
}

/// Finding 8: a flood of bad connections writes a bounded number of WARN lines (at most 10
/// per kind per 10 s), then one line per kind with the count of what was left out.
#[test]
fn a_flood_of_bad_connections_is_logged_rate_limited_with_a_count() {
    let server = start_coordinator_with_config(None, &["--state", ":memory:"]);
    for i in 0..300 {
        let bad_header =
            lava_multinode_tests::raw_exchange(&server.addr, b"zzzzzzzz{}", Duration::from_secs(5))
                .unwrap();
        assert!(String::from_utf8_lossy(&bad_header).contains("nack"), "{i}");
        let bad_json = lava_multinode_tests::raw_exchange(
            &server.addr,
            b"00000003abc",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&bad_json).contains("nack"), "{i}");
    }
    // The counts come once the 10 s window is over, even though the flood has stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = server.log_text();
        if log.contains("similar warnings (bad_request)") && log.contains("(bad_frame)") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no count of suppressed warnings:\n{log}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let warns: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warns.len() <= 2 * 10 + 2,
        "{} WARN lines for 600 bad connections:\n{}",
        warns.len(),
        warns.join("\n")
    );
    assert!(
        log.contains("suppressed 290 similar warnings (bad_frame) in the last 10s"),
        "{log}"
    );
    assert!(
        log.contains("suppressed 290 similar warnings (bad_request) in the last 10s"),
        "{log}"
    );
    // And the coordinator still says why to each: every one got its nack (above).
}

/// Finding 8: a state file the coordinator may not write is refused at start with its path
/// and the system's reason, not only SQLite's `database is locked` or `disk I/O error`.
#[test]
fn a_state_file_it_may_not_write_is_named_with_the_cause() {
    let dir = lava_multinode_tests::TempDir::new("ro-state");
    let folder = dir.path().join("state");
    std::fs::create_dir(&folder).unwrap();
    let state = folder.join("state.db");
    std::fs::write(&state, b"").unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut cmd = if root {
        // Root may write anything: run it as nobody, to whom the folder is read-only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(lava_multinode_tests::bin("lava-coordinator"));
        cmd
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::process::Command::new(lava_multinode_tests::bin("lava-coordinator"))
    };
    let out = cmd
        .args([
            "--listen",
            "127.0.0.1:0",
            "--logfile",
            "-",
            "--config",
            "/nonexistent",
        ])
        .arg("--state")
        .arg(&state)
        .output()
        .expect("run the coordinator");
    if !root {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&*state.to_string_lossy()), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot create files in {}", folder.display()))
            && stderr.contains("Permission denied"),
        "the cause is named: {stderr}"
    );
}
