//! Process tests of barriers on part of a group: `lava-sync --role ROLE ID` and
//! `lava-sync --count N ID` with the real tools, round after round, against our coordinator,
//! Debian's reference and the console.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use lava_multinode_tests::tools::{assert_extensions_need_ours, GroupConfig, Node, Tools};
use lava_multinode_tests::{
    coordinator_status, start_coordinator, wait_until_held, STATE_DEADLINE,
};

const NACK: i32 = 4;

fn round(addr: &str, group: &str, id: &str) -> u64 {
    let status = coordinator_status(addr, Some(group)).expect("status");
    status["groups"][0]["barriers"][id]["round"]
        .as_u64()
        .unwrap_or_else(|| panic!("no barrier {id} in {status}"))
}

#[test]
fn a_role_barrier_and_a_count_barrier_release_round_after_round() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "parts", 4);
    let s1 = Node::new(&tools, &cfg, "s1", "server");
    let s2 = Node::new(&tools, &cfg, "s2", "server");
    let c1 = Node::new(&tools, &cfg, "c1", "client");
    let c2 = Node::new(&tools, &cfg, "c2", "client");

    let waiting = s1.spawn("lava-sync", &["--role", "server", "up"]);
    wait_until_held(
        &server.addr,
        "parts",
        "s1",
        "barrier up (role server)",
        STATE_DEADLINE,
    );
    // Who has the role is known once every node registered (or the roster was declared).
    c1.run("lava-send", &["here"]).ok();
    c2.run("lava-send", &["here"]).ok();
    // c1 registered as a client: it cannot join the servers' barrier.
    let err = c1
        .run("lava-sync", &["--role", "server", "up"])
        .fails(NACK)
        .to_owned();
    assert!(
        err.contains("\"c1\" is not a member of role \"server\""),
        "{err}"
    );
    // The clients never join: the servers meet without them.
    s2.run("lava-sync", &["--role", "server", "up"]).ok();
    waiting.wait().ok();
    assert_eq!(round(&server.addr, "parts", "up"), 2);

    for expected_round in [1, 2] {
        let waiting = c1.spawn("lava-sync", &["--count", "2", "pair"]);
        wait_until_held(
            &server.addr,
            "parts",
            "c1",
            "barrier pair (2 members)",
            STATE_DEADLINE,
        );
        let other = if expected_round == 1 { &c2 } else { &s1 };
        other.run("lava-sync", &["--count", "2", "pair"]).ok();
        waiting.wait().ok();
        assert_eq!(round(&server.addr, "parts", "pair"), expected_round + 1);
    }
    let err = c1
        .run("lava-sync", &["--count", "3", "pair"])
        .fails(NACK)
        .to_owned();
    assert!(err.contains("barrier \"pair\" is for 2 members"), "{err}");
    c1.run("lava-sync", &["--role", "x", "--count", "2", "pair"])
        .fails(2);
}

#[test]
fn a_role_barrier_ends_when_a_member_of_the_role_fails() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "fail", 3);
    let s1 = Node::new(&tools, &cfg, "s1", "server");
    let s2 = Node::new(&tools, &cfg, "s2", "server");
    let c = Node::new(&tools, &cfg, "c", "client");
    c.run("lava-send", &["here"]).ok();
    s2.run("lava-send", &["here"]).ok();
    let waiting = s1.spawn("lava-sync", &["--role", "server", "up"]);
    wait_until_held(
        &server.addr,
        "fail",
        "s1",
        "barrier up (role server)",
        STATE_DEADLINE,
    );
    s2.run("lava-fail", &["no", "disk"]).ok();
    let run = waiting.wait();
    let err = run.fails(NACK);
    assert!(err.contains("member \"s2\" failed: no disk"), "{err}");
}

#[test]
fn against_lavas_coordinator_or_over_the_console_barriers_say_they_need_ours() {
    assert_extensions_need_ours(
        &Tools::native(),
        &[("lava-sync", &["--count", "1", "b"][..])],
        &[("lava-sync", &["--role", "r", "b"][..])],
    );
}
