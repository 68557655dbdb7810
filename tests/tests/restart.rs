//! Durability: `kill -9` the real coordinator at many points of a scripted group (between
//! requests, while clients are blocked), restart it on the same state file, and check that
//! every client finishes with the same replies as in an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lava_multinode_tests::{bin, free_port, wait_for_port, TempDir};
use lava_protocol::{Client, Reply, Request, RequestKind, Response};
use serde_json::json;

fn spawn(port: u16, state: &Path, log: &Path) -> Child {
    spawn_with(port, state, log, Path::new("/nonexistent.conf"))
}

fn spawn_with(port: u16, state: &Path, log: &Path, config: &Path) -> Child {
    Command::new(bin("lava-coordinator"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .args(["--loglevel", "DEBUG", "--logfile"])
        .arg(log)
        .arg("--state")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lava-coordinator")
}

/// One call as our tools make it: blocking slices, retries on connection errors, the same
/// `request_id` across retries.
fn call(client: &Client, mut req: Request, request_id: String) -> Reply {
    req.block = Some(1.0);
    req.request_id = Some(request_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no answer for {req:?}");
        match client.call(&req) {
            Ok(reply) if reply.is_wait() => {}
            Ok(reply) => return normalise(reply),
            Err(e) if e.is_transient() => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
}

/// One call as LAVA's client makes it: no `block`, no `request_id`; after a `wait`, or when
/// the connection fails or closes without a reply (LAVA reads that as `wait`), the same
/// request again after a delay (LAVA's `poll_delay`, shortened).
fn poll(client: &Client, req: &Request) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no answer for {req:?}");
        match client.call(req) {
            Ok(reply) if reply.is_wait() => thread::sleep(Duration::from_millis(5)),
            Ok(reply) => return sorted_senders(normalise(reply)),
            Err(e) if e.is_transient() => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
}

/// A message lists its senders in the order they first sent, which depends on how the
/// clients' polls interleave.
fn sorted_senders(mut reply: Reply) -> Reply {
    if let Some(serde_json::Value::Object(senders)) = &mut reply.message {
        senders.sort_keys();
    }
    reply
}

/// group_data lists members in registration order, which depends on thread timing.
fn normalise(mut reply: Reply) -> Reply {
    if let Some(roles) = &mut reply.roles {
        roles.sort_keys();
    }
    reply
}

fn script(client: &str) -> Vec<RequestKind> {
    let send = |id: &str, v| RequestKind::Send {
        id: id.into(),
        message: v,
    };
    let sync = |id: &str| RequestKind::Sync {
        id: id.into(),
        message: json!({}),
    };
    let wait = |id: &str| RequestKind::Wait { id: id.into() };
    let wait_all = |id: &str, role: Option<&str>| RequestKind::WaitAll {
        id: id.into(),
        role: role.map(Into::into),
    };
    match client {
        "a" => vec![
            RequestKind::GroupData,
            send("m1", json!({"from": "a", "text": "première"})),
            send("m2", json!({"from": "a"})),
            sync("s1"),
            wait_all("m2", None),
            send("m3", json!({"n": 1})),
            send("m3", json!({"n": 2})),
            sync("s1"),
            wait_all("m4", Some("server")),
            sync("s2"),
            RequestKind::ClearGroup,
        ],
        "b" => vec![
            RequestKind::GroupData,
            wait("m1"),
            send("m2", json!({"from": "b"})),
            sync("s1"),
            wait_all("m2", None),
            // After the second s1, a has sent both of its m3: the data is its latest.
            sync("s1"),
            wait("m3"),
            send("m4", json!({"ip": "10.0.0.2"})),
            sync("s2"),
            RequestKind::ClearGroup,
        ],
        "c" => vec![
            RequestKind::GroupData,
            send("m2", json!({"from": "c"})),
            sync("s1"),
            wait_all("m2", None),
            sync("s1"),
            send("m4", json!({"ip": "10.0.0.3"})),
            wait_all("m4", Some("server")),
            sync("s2"),
            RequestKind::ClearGroup,
        ],
        _ => unreachable!(),
    }
}

fn role(client: &str) -> &'static str {
    if client == "a" {
        "client"
    } else {
        "server"
    }
}

/// Runs the three scripts concurrently, as our tools call; returns each client's replies.
fn run_group(addr: &str, group: &str) -> Vec<Vec<Reply>> {
    run_group_as(addr, group, false)
}

/// The same, as our tools call (`polling` false) or as LAVA's client does (true).
fn run_group_as(addr: &str, group: &str, polling: bool) -> Vec<Vec<Reply>> {
    let handles: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let client =
                Client::new(addr.to_owned()).with_connect_timeout(Duration::from_millis(500));
            let group = group.to_owned();
            thread::spawn(move || {
                script(name)
                    .into_iter()
                    .enumerate()
                    .map(|(step, kind)| {
                        if name == "c" && step == 2 {
                            // Keep the others blocked in s1 for a while.
                            thread::sleep(Duration::from_millis(150));
                        }
                        let mut req = Request::new(&group, name, role(name), kind);
                        req.group_size = Some(3);
                        req.hostname = Some("host".into());
                        if polling {
                            poll(&client, &req)
                        } else {
                            call(&client, req, format!("{name}-{step}"))
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

struct Killer {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<(Child, usize)>>,
}

impl Killer {
    /// Stops killing; returns the running coordinator and how often it was killed.
    fn finish(mut self) -> (Child, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("killer")
    }
}

impl Drop for Killer {
    /// On a failed assertion, leave no coordinator behind.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Ok((mut child, _))) = self.handle.take().map(|h| h.join()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills the coordinator when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills the coordinator with SIGKILL every `every` and restarts it on the same state.
fn start_killer(child: Child, port: u16, state: PathBuf, log: PathBuf, every: Duration) -> Killer {
    start_killer_with(
        child,
        port,
        state,
        log,
        PathBuf::from("/nonexistent.conf"),
        every,
    )
}

fn start_killer_with(
    mut child: Child,
    port: u16,
    state: PathBuf,
    log: PathBuf,
    config: PathBuf,
    every: Duration,
) -> Killer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        let mut kills = 0;
        while !flag.load(Ordering::Relaxed) {
            thread::sleep(every);
            if flag.load(Ordering::Relaxed) {
                break;
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            kills += 1;
            child = spawn_with(port, &state, &log, &config);
            assert!(wait_for_port(
                &format!("127.0.0.1:{port}"),
                Duration::from_secs(10)
            ));
        }
        (child, kills)
    });
    Killer {
        stop,
        handle: Some(handle),
    }
}

#[test]
fn kill_9_at_any_moment_changes_no_reply() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("state.db");
    let log = dir.path().join("coordinator.log");
    let mut guard = Guard(Some(spawn(port, &state, &log)));
    assert!(wait_for_port(&addr, Duration::from_secs(10)));

    let expected = run_group(&addr, "calm");
    for (client, replies) in ["a", "b", "c"].iter().zip(&expected) {
        assert!(
            replies.iter().all(|r| r.response != Response::Nack),
            "{client}: {replies:?}"
        );
    }
    assert_eq!(
        expected[1][1],
        Reply::ack_message(json!({"a": {"from": "a", "text": "première"}}))
    );
    assert_eq!(expected[1][6], Reply::ack_message(json!({"a": {"n": 2}})));

    // Different kill rhythms hit different points of the scripts.
    let mut total_kills = 0;
    for (round, every_ms) in [7u64, 23, 41, 67].into_iter().enumerate() {
        let child = guard.0.take().expect("a running coordinator");
        let every = Duration::from_millis(every_ms);
        let killer = start_killer(child, port, state.clone(), log.clone(), every);
        let got = run_group(&addr, &format!("stormy{round}"));
        let (child, kills) = killer.finish();
        guard.0 = Some(child);
        total_kills += kills;
        assert_eq!(got, expected, "kill every {every_ms} ms ({kills} kills)");
    }
    assert!(
        total_kills >= 10,
        "the test killed the coordinator only {total_kills} times"
    );
}

#[test]
fn a_restart_keeps_groups_and_memory_only_mode_does_not() {
    let dir = TempDir::new("restart2");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("state.db");
    let log = dir.path().join("coordinator.log");
    let client = Client::new(addr.clone());
    let send = |c: &Client| {
        let mut r = Request::new(
            "kept",
            "a",
            "r",
            RequestKind::Send {
                id: "m".into(),
                message: json!({"k": "v"}),
            },
        );
        r.group_size = Some(2);
        c.call(&r).unwrap()
    };
    let read = |c: &Client| {
        let mut r = Request::new("kept", "b", "r", RequestKind::Wait { id: "m".into() });
        r.group_size = Some(2);
        c.call(&r).unwrap()
    };

    let mut child = spawn(port, &state, &log);
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    assert_eq!(send(&client), Reply::ack());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn(port, &state, &log);
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    assert_eq!(read(&client), Reply::ack_message(json!({"a": {"k": "v"}})));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("1 groups restored"));
    child.kill().unwrap();
    child.wait().unwrap();

    let memory = |port: u16| {
        Command::new(bin("lava-coordinator"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
                "/nonexistent.conf",
                "--state",
                ":memory:",
            ])
            .args(["--logfile", "/dev/null"])
            .spawn()
            .unwrap()
    };
    let mut child = memory(port);
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    assert_eq!(send(&client), Reply::ack());
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = memory(port);
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    assert!(read(&client).is_wait(), "nothing kept in memory-only mode");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A `lava_sync` whose message nests deeper than the store reads back is refused at the wire,
/// and the state file stays readable: the next start restores the group.
#[test]
fn a_message_too_deep_to_restore_is_refused_and_restarts_still_work() {
    let dir = TempDir::new("restart-deep");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("state.db");
    let log = dir.path().join("coordinator.log");
    let client = Client::new(addr.clone());
    let nested = |levels: usize| (0..levels).fold(json!("v"), |inner, _| json!({ "k": inner }));
    let request = |levels: usize, sync: bool| {
        let (id, message) = ("s".to_owned(), nested(levels));
        let kind = if sync {
            RequestKind::Sync { id, message }
        } else {
            RequestKind::Send { id, message }
        };
        let mut r = Request::new("deep", "a", "r", kind);
        r.group_size = Some(2);
        r
    };
    let sync = |levels| request(levels, true);

    let mut child = spawn(port, &state, &log);
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    let refused = client.call(&sync(123)).unwrap();
    assert_eq!(refused.response, Response::Nack, "{refused:?}");
    assert!(
        refused.error.as_deref().unwrap_or("").contains("message"),
        "{refused:?}"
    );
    let deepest = lava_protocol::message::MAX_MESSAGE_DEPTH;
    assert!(client.call(&sync(deepest)).unwrap().is_wait());
    // An `ack` leaves only once committed, and commits are in order: the sync is stored too.
    assert_eq!(client.call(&request(deepest, false)).unwrap(), Reply::ack());
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = spawn(port, &state, &log);
    assert!(
        wait_for_port(&addr, Duration::from_secs(10)),
        "it starts again"
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("1 groups restored"));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 15, finding 2: a LAVA client (plain polling: no `block`, no `request_id`) whose
/// `lava_sync` completed the round, but whose reply never reached it (here: it closes its
/// connection without reading; in the soak, `kill -9` right after the commit), asks again
/// after a restart and gets the `ack` it missed, instead of opening a round nobody joins.
/// Syncing on the id again afterwards still makes a second round (COMPATIBILITY.md #15).
#[test]
fn a_lava_clients_sync_reply_lost_to_kill_9_is_answered_after_the_restart() {
    use std::io::Write;
    let dir = TempDir::new("restart-lost-reply");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("state.db");
    let log = dir.path().join("coordinator.log");
    let client = Client::new(addr.clone());
    let req = |name: &str, kind: RequestKind| {
        let mut r = Request::new("lost", name, "r", kind);
        r.group_size = Some(2);
        r.hostname = Some("host".into());
        r
    };
    let sync = || RequestKind::Sync {
        id: "s".into(),
        message: json!({}),
    };
    let mut guard = Guard(Some(spawn(port, &state, &log)));
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    assert!(client.call(&req("a", sync())).unwrap().is_wait());
    // b completes the round and goes away without reading its ack.
    {
        let body = req("b", sync()).to_json();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .write_all(&lava_protocol::frame::encode(&body))
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    // a's ack shows b's arrival was applied, and (commits are in order) stored.
    assert_eq!(
        poll(&client, &req("a", sync())),
        Reply::ack_message(json!("s"))
    );
    let mut child = guard.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    guard.0 = Some(spawn(port, &state, &log));
    assert!(wait_for_port(&addr, Duration::from_secs(10)));

    assert_eq!(
        client.call(&req("b", sync())).unwrap(),
        Reply::ack_message(json!("s")),
        "b's retry after the restart gets the ack it missed"
    );
    // Both act on their reply, then sync on the id again: a second round.
    let send = RequestKind::Send {
        id: "m".into(),
        message: json!({"k": "v"}),
    };
    assert_eq!(client.call(&req("b", send)).unwrap(), Reply::ack());
    assert_eq!(
        client
            .call(&req("a", RequestKind::Wait { id: "m".into() }))
            .unwrap(),
        Reply::ack_message(json!({"b": {"k": "v"}}))
    );
    assert!(client.call(&req("a", sync())).unwrap().is_wait());
    assert!(client.call(&req("a", sync())).unwrap().is_wait());
    assert_eq!(
        client.call(&req("b", sync())).unwrap(),
        Reply::ack_message(json!("s"))
    );
    assert_eq!(
        client.call(&req("a", sync())).unwrap(),
        Reply::ack_message(json!("s"))
    );
}

/// The crash storm of `kill_9_at_any_moment_changes_no_reply` with LAVA's polling clients,
/// plain and with `hold_lava_requests`: every client finishes with the replies of a calm run
/// (in the soak, a sync reply lost to the kill stranded the node that asked again).
#[test]
fn kill_9_at_any_moment_strands_no_polling_lava_client() {
    let dir = TempDir::new("restart-polling");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("state.db");
    let log = dir.path().join("coordinator.log");
    let plain = PathBuf::from("/nonexistent.conf");
    let hold = dir.path().join("hold.conf");
    std::fs::write(&hold, r#"{"hold_lava_requests": 1}"#).unwrap();
    let mut guard = Guard(Some(spawn(port, &state, &log)));
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    let expected = run_group_as(&addr, "calm", true);
    let tools: Vec<Vec<Reply>> = run_group(&addr, "calm-tools")
        .into_iter()
        .map(|replies| replies.into_iter().map(sorted_senders).collect())
        .collect();
    assert_eq!(expected, tools, "both kinds of client agree");

    let mut total_kills = 0;
    const GROUPS: usize = 12;
    for (round, (config, every_ms)) in [(&plain, 7u64), (&plain, 19), (&hold, 11), (&hold, 29)]
        .into_iter()
        .enumerate()
    {
        let mut child = guard.0.take().expect("a running coordinator");
        child.kill().unwrap();
        child.wait().unwrap();
        let child = spawn_with(port, &state, &log, config);
        assert!(wait_for_port(&addr, Duration::from_secs(10)));
        let every = Duration::from_millis(every_ms);
        let killer = start_killer_with(
            child,
            port,
            state.clone(),
            log.clone(),
            config.clone(),
            every,
        );
        // Several groups at once, so that kills find replies in flight.
        let groups: Vec<_> = (0..GROUPS)
            .map(|g| {
                let addr = addr.clone();
                thread::spawn(move || run_group_as(&addr, &format!("polling{round}-{g}"), true))
            })
            .collect();
        let got: Vec<_> = groups.into_iter().map(|h| h.join().unwrap()).collect();
        let (child, kills) = killer.finish();
        guard.0 = Some(child);
        total_kills += kills;
        for (g, got) in got.iter().enumerate() {
            assert_eq!(
                got,
                &expected,
                "group {g}: kill every {every_ms} ms ({kills} kills), config {}",
                config.display()
            );
        }
    }
    assert!(
        total_kills >= 10,
        "the test killed the coordinator only {total_kills} times"
    );
}
