//! Process tests of locks: the real `lava-lock` and `lava-unlock` against our coordinator
//! (handed over on unlock and on failure, counted, lab-wide, across `kill -9` of the
//! coordinator), against Debian's reference coordinator and over the console, where they
//! say they need ours.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use lava_multinode_tests::tools::{assert_extensions_need_ours, GroupConfig, Node, Tools};
use lava_multinode_tests::{
    bin, coordinator_status, free_port, start_coordinator, start_coordinator_with_config,
    wait_for_port, wait_for_status, wait_until_held, TempDir, STATE_DEADLINE,
};
use std::time::Duration;

// Exit codes, as `--help` documents them.
const NACK: i32 = 4;
const TIMEOUT: i32 = 5;
const BUSY: i32 = 8;

/// The holders of group lock `name` in `group` as the status view shows them.
fn holders(addr: &str, group: &str, name: &str) -> Vec<String> {
    let status = coordinator_status(addr, Some(group)).expect("status");
    status["groups"][0]["locks"]["group"][name]["holders"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|c| c.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_lock_is_taken_tried_counted_and_handed_over_with_whose_and_why() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "locks", 4);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| Node::new(&tools, &cfg, n, "r"));
    // d only registers: the group is complete, and d never waits (no deadlock verdict).
    d.run("lava-send", &["here"]).ok();

    assert_eq!(a.run("lava-lock", &["dut"]).ok(), "lock=dut\nholders=a\n");
    // Asking again while holding answers at once.
    assert_eq!(a.run("lava-lock", &["dut"]).ok(), "lock=dut\nholders=a\n");
    let busy = b.run("lava-lock", &["--try", "dut"]);
    let err = busy.fails(BUSY);
    assert!(
        err.contains("lock \"dut\" of group \"locks\" has no free place"),
        "{err}"
    );
    assert!(busy.stdout.is_empty());

    let waiting = b.spawn("lava-lock", &["dut"]);
    wait_until_held(&server.addr, "locks", "b", "lava-lock dut", STATE_DEADLINE);
    let err = c.run("lava-unlock", &["dut"]).fails(NACK).to_owned();
    assert!(err.contains("\"c\" does not hold lock \"dut\""), "{err}");
    a.run("lava-unlock", &["dut"]).ok();
    assert_eq!(
        waiting.wait().ok(),
        "lock=dut\nholders=b\nfreed_by=a\nfreed_because=unlocked\n"
    );
    assert_eq!(holders(&server.addr, "locks", "dut"), ["b"]);

    // A holder that fails gives its place back at once, saying why.
    let waiting = c.spawn("lava-lock", &["dut"]);
    wait_until_held(&server.addr, "locks", "c", "lava-lock dut", STATE_DEADLINE);
    b.run("lava-fail", &["disk", "full"]).ok();
    assert_eq!(
        waiting.wait().ok(),
        "lock=dut\nholders=c\nfreed_by=b\nfreed_because=\"b\" failed: disk full\n"
    );
    let err = b.run("lava-lock", &["other"]).fails(NACK).to_owned();
    assert!(err.contains("a failed member takes no lock"), "{err}");

    // A counted lock: two places, and one count for everybody.
    assert_eq!(
        a.run("lava-lock", &["--count", "2", "pool"]).ok(),
        "lock=pool\nholders=a\n"
    );
    assert_eq!(
        c.run("lava-lock", &["--count=2", "pool"]).ok(),
        "lock=pool\nholders=a,c\n"
    );
    let err = d
        .run("lava-lock", &["--count", "3", "pool"])
        .fails(NACK)
        .to_owned();
    assert!(
        err.contains("lock \"pool\" has 2 places; this request asks for 3"),
        "{err}"
    );
    d.run("lava-lock", &["--try", "--count", "2", "pool"])
        .fails(BUSY);

    // --timeout gives up with exit 5.
    let mut impatient = Node::new(&tools, &cfg, "d", "r");
    impatient.set_env("LAVA_MULTINODE_TIMEOUT", Some("0.5"));
    let err = impatient
        .run("lava-lock", &["dut"])
        .fails(TIMEOUT)
        .to_owned();
    assert!(err.contains("waiting for a place in lock \"dut\""), "{err}");

    // Bad arguments.
    a.run("lava-lock", &[]).fails(2);
    a.run("lava-lock", &["--count", "0", "x"]).fails(2);
}

#[test]
fn lab_wide_locks_need_the_setting_and_are_shared_by_every_group() {
    let tools = Tools::native();
    let plain = start_coordinator(&[]);
    let node = Node::new(&tools, &GroupConfig::new(&plain.addr, "g1", 1), "a", "r");
    let err = node
        .run("lava-lock", &["--lab", "pdu"])
        .fails(NACK)
        .to_owned();
    assert!(err.contains("lab-wide locks are not allowed"), "{err}");
    assert!(err.contains("lab_locks"), "{err}");

    let server = start_coordinator_with_config(Some(r#"{"lab_locks": true}"#), &[]);
    let a = Node::new(&tools, &GroupConfig::new(&server.addr, "g1", 1), "a", "r");
    let b = Node::new(&tools, &GroupConfig::new(&server.addr, "g2", 1), "b", "r");
    assert_eq!(
        a.run("lava-lock", &["--lab", "pdu"]).ok(),
        "lock=pdu\nholders=g1/a\n"
    );
    // The group's own lock of the same name is another lock.
    assert_eq!(b.run("lava-lock", &["pdu"]).ok(), "lock=pdu\nholders=b\n");
    let waiting = b.spawn("lava-lock", &["--lab", "pdu"]);
    let status = wait_for_status(
        &server.addr,
        None,
        "b held on the lab lock",
        STATE_DEADLINE,
        |s| {
            lava_multinode_tests::held_requests(s, "g2")
                .iter()
                .any(|(c, w)| c == "b" && w == "lava-lock --lab pdu")
        },
    );
    assert_eq!(
        status["lab_locks"]["pdu"]["holders"],
        serde_json::json!(["g1/a"])
    );
    a.run("lava-unlock", &["--lab", "pdu"]).ok();
    assert_eq!(
        waiting.wait().ok(),
        "lock=pdu\nholders=g2/b\nfreed_by=g1/a\nfreed_because=unlocked\n"
    );
}

#[test]
fn against_lavas_coordinator_or_over_the_console_locks_say_they_need_ours() {
    assert_extensions_need_ours(
        &Tools::native(),
        &[
            ("lava-lock", &["dut"][..]),
            ("lava-lock", &["--try", "dut"]),
            ("lava-unlock", &["dut"]),
        ],
        &[("lava-lock", &["dut"][..])],
    );
}

/// A coordinator process killed when dropped (a failing test leaves none behind).
struct Running(Child);

impl Running {
    fn kill_9(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_coordinator(port: u16, state: &Path, log: &Path) -> Running {
    let child = Command::new(bin("lava-coordinator"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--config",
            "/nonexistent.conf",
            "--loglevel",
            "DEBUG",
            "--logfile",
        ])
        .arg(log)
        .arg("--state")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lava-coordinator");
    assert!(
        wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(10)),
        "the coordinator did not come up"
    );
    Running(child)
}

/// `kill -9` of the coordinator while a lock is held and a waiter waits for it: after the
/// restart the holder still holds it, the waiter (its tool asks again) gets it when the holder
/// gives it back, and a place held across a second kill is still held.
#[test]
fn a_held_lock_and_its_waiter_survive_kill_9_of_the_coordinator() {
    let dir = TempDir::new("locks-restart");
    let (state, log) = (dir.path().join("state.db"), dir.path().join("server.log"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = spawn_coordinator(port, &state, &log);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&addr, "crash", 3);
    let [a, b, c] = ["a", "b", "c"].map(|n| Node::new(&tools, &cfg, n, "r"));
    c.run("lava-send", &["here"]).ok();

    a.run("lava-lock", &["dut"]).ok();
    let waiting = b.spawn("lava-lock", &["dut"]);
    wait_until_held(&addr, "crash", "b", "lava-lock dut", STATE_DEADLINE);
    server.kill_9();

    let server = spawn_coordinator(port, &state, &log);
    assert_eq!(
        holders(&addr, "crash", "dut"),
        ["a"],
        "the holder was restored"
    );
    // b's tool found the coordinator gone and asked again: it waits once more.
    wait_until_held(&addr, "crash", "b", "lava-lock dut", STATE_DEADLINE);
    a.run("lava-unlock", &["dut"]).ok();
    assert_eq!(
        waiting.wait().ok(),
        "lock=dut\nholders=b\nfreed_by=a\nfreed_because=unlocked\n"
    );

    server.kill_9();
    let _server = spawn_coordinator(port, &state, &log);
    assert_eq!(holders(&addr, "crash", "dut"), ["b"]);
    c.run("lava-lock", &["--try", "dut"]).fails(BUSY);
    b.run("lava-unlock", &["dut"]).ok();
    assert_eq!(
        c.run("lava-lock", &["--try", "dut"]).ok(),
        "lock=dut\nholders=c\n"
    );
}

/// A holder whose tool is killed while it waits on something else stops renewing its lease:
/// once the lease runs out it counts as gone, and its lock goes to the next waiter, who is
/// told so.
#[test]
fn a_lock_of_a_holder_gone_past_its_lease_goes_to_the_next_waiter() {
    let server = start_coordinator_with_config(Some(r#"{"block_max": 0.5}"#), &[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "gone", 3);
    let mut a = Node::new(&tools, &cfg, "a", "r");
    a.set_env("LAVA_MULTINODE_LEASE", Some("0.5"));
    let b = Node::new(&tools, &cfg, "b", "r");
    let c = Node::new(&tools, &cfg, "c", "r");
    c.run("lava-send", &["here"]).ok();
    a.run("lava-lock", &["dut"]).ok();
    let mut killed = a.command("lava-wait", &["never"]).spawn().expect("spawn");
    wait_until_held(&server.addr, "gone", "a", "lava_wait never", STATE_DEADLINE);
    let waiting = b.spawn("lava-lock", &["dut"]);
    wait_until_held(&server.addr, "gone", "b", "lava-lock dut", STATE_DEADLINE);
    killed.kill().expect("kill");
    killed.wait().expect("reap");
    let out = waiting.wait().ok().to_owned();
    assert!(
        out.starts_with("lock=dut\nholders=b\nfreed_by=a\n"),
        "{out}"
    );
    assert!(out.contains("lease expired"), "{out}");
}
