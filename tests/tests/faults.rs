//! Process-level tests of the coordinator under the faults of issue 15's soak: hostile
//! clients that announce large bodies and stall, one address that opens every connection,
//! a coordinator that is itself stopped (SIGSTOP), floods of bad connections.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

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
            let client = server
                .client()
                .with_io_timeout(Duration::from_secs(60));
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
    assert!(took < Duration::from_secs(5), "the good group took {took:?}");
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
