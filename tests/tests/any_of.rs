//! Process tests of any-of waits: `lava-wait ID1 ID2 ...` and `lava-wait-all --any ID ROLE`
//! with the real tools against our coordinator, Debian's reference and the console.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use lava_multinode_tests::tools::{assert_extensions_need_ours, GroupConfig, Node, Tools};
use lava_multinode_tests::{start_coordinator, wait_until_held, STATE_DEADLINE};

const NACK: i32 = 4;

#[test]
fn a_wait_for_any_of_several_ids_prints_which_one_first() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "any", 3);
    let s = Node::new(&tools, &cfg, "s", "server");
    let w1 = Node::new(&tools, &cfg, "w1", "worker");
    let w2 = Node::new(&tools, &cfg, "w2", "worker");

    let waiting = s.spawn("lava-wait", &["ready", "failed"]);
    wait_until_held(
        &server.addr,
        "any",
        "s",
        "wait_any ready failed",
        STATE_DEADLINE,
    );
    w1.run("lava-send", &["failed", "why=disk full"]).ok();
    assert_eq!(waiting.wait().ok(), "failed\nw1:why=disk full\n");
    assert_eq!(s.cache_text().as_deref(), Some("w1:why=disk full\n"));

    // Any one member of a role: a send by another role does not count.
    let waiting = s.spawn("lava-wait-all", &["--any", "up", "worker"]);
    wait_until_held(
        &server.addr,
        "any",
        "s",
        "wait_any up (role worker)",
        STATE_DEADLINE,
    );
    s.run("lava-send", &["up", "n=0"]).ok();
    w2.run("lava-send", &["up", "n=2"]).ok();
    assert_eq!(waiting.wait().ok(), "w2:n=2\n");

    // Already sent: answered at once, the first in the order given.
    assert_eq!(
        s.run("lava-wait", &["up", "failed"]).ok(),
        "up\ns:n=0\nw2:n=2\n"
    );
}

#[test]
fn an_any_of_wait_ends_when_every_member_that_could_send_failed() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "doomed", 3);
    let s = Node::new(&tools, &cfg, "s", "server");
    let w1 = Node::new(&tools, &cfg, "w1", "worker");
    let w2 = Node::new(&tools, &cfg, "w2", "worker");
    let waiting = s.spawn("lava-wait-all", &["--any", "up", "worker"]);
    wait_until_held(
        &server.addr,
        "doomed",
        "s",
        "wait_any up (role worker)",
        STATE_DEADLINE,
    );
    w1.run("lava-fail", &["no", "disk"]).ok();
    w2.run("lava-fail", &["no", "net"]).ok();
    let run = waiting.wait();
    let err = run.fails(NACK);
    assert!(
        err.contains("every other member of role \"worker\" failed"),
        "{err}"
    );
    assert!(err.contains("\"w2\" (no net)"), "{err}");
}

#[test]
fn against_lavas_coordinator_or_over_the_console_any_of_waits_say_they_need_ours() {
    assert_extensions_need_ours(
        &Tools::native(),
        &[
            ("lava-wait", &["a", "b"][..]),
            ("lava-wait-all", &["--any", "a"]),
        ],
        &[("lava-wait", &["a", "b"][..])],
    );
}
