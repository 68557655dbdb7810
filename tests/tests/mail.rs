//! Process tests of messages to one node (`lava-send --to`) and queues (`lava-send --queue`,
//! `lava-wait --consume`) with the real tools, against our coordinator, Debian's reference
//! and the console.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use lava_multinode_tests::tools::{assert_extensions_need_ours, GroupConfig, Node, Tools};
use lava_multinode_tests::{
    held_requests, start_coordinator, wait_for_status, wait_until_held, STATE_DEADLINE,
};

const NACK: i32 = 4;
const TIMEOUT: i32 = 5;

#[test]
fn a_message_to_one_node_reaches_that_node_only() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "direct", 3);
    let [s, a, b] = ["s", "a", "b"].map(|n| Node::new(&tools, &cfg, n, "r"));
    let to_a = a.spawn("lava-wait", &["job"]);
    let to_b = b.spawn("lava-wait", &["job"]);
    wait_until_held(&server.addr, "direct", "a", "lava_wait job", STATE_DEADLINE);
    wait_until_held(&server.addr, "direct", "b", "lava_wait job", STATE_DEADLINE);
    s.run("lava-send", &["--to", "a", "job", "n=1"]).ok();
    assert_eq!(to_a.wait().ok(), "s:n=1\n");
    assert_eq!(a.cache_text().as_deref(), Some("s:n=1\n"));
    let status = wait_for_status(
        &server.addr,
        Some("direct"),
        "a answered",
        STATE_DEADLINE,
        |st| !held_requests(st, "direct").iter().any(|(c, _)| c == "a"),
    );
    assert!(
        held_requests(&status, "direct")
            .iter()
            .any(|(c, _)| c == "b"),
        "b still waits: the message was a's"
    );
    s.run("lava-send", &["job", "n=all"]).ok();
    assert_eq!(to_b.wait().ok(), "s:n=all\n");

    let err = s
        .run("lava-send", &["--to", "zed", "job", "k=v"])
        .fails(NACK)
        .to_owned();
    assert!(
        err.contains("client \"zed\" is not a member of group \"direct\""),
        "{err}"
    );
}

#[test]
fn each_queue_entry_is_taken_by_one_node() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "queue", 3);
    let [s, a, b] = ["s", "a", "b"].map(|n| Node::new(&tools, &cfg, n, "r"));
    let wa = a.spawn("lava-wait", &["--consume", "work"]);
    let wb = b.spawn("lava-wait", &["--consume", "work"]);
    wait_until_held(&server.addr, "queue", "a", "consume work", STATE_DEADLINE);
    wait_until_held(&server.addr, "queue", "b", "consume work", STATE_DEADLINE);
    s.run("lava-send", &["--queue", "work", "n=1"]).ok();
    s.run("lava-send", &["--queue", "work", "n=2"]).ok();
    let mut got = vec![wa.wait().ok().to_owned(), wb.wait().ok().to_owned()];
    got.sort();
    assert_eq!(got, ["s:n=1\n", "s:n=2\n"]);

    // An entry for b: a does not get it.
    s.run("lava-send", &["--queue", "--to", "b", "work", "n=3"])
        .ok();
    let mut impatient = Node::new(&tools, &cfg, "a", "r");
    impatient.set_env("LAVA_MULTINODE_TIMEOUT", Some("0.5"));
    let err = impatient
        .run("lava-wait", &["--consume", "work"])
        .fails(TIMEOUT)
        .to_owned();
    assert!(err.contains("an entry of queue \"work\""), "{err}");
    assert_eq!(b.run("lava-wait", &["--consume", "work"]).ok(), "s:n=3\n");
    a.run("lava-wait", &["--consume", "a", "b"]).fails(2);
}

#[test]
fn against_lavas_coordinator_or_over_the_console_they_say_they_need_ours() {
    assert_extensions_need_ours(
        &Tools::native(),
        &[
            ("lava-send", &["--to", "a", "id", "k=v"][..]),
            ("lava-send", &["--queue", "id", "k=v"]),
            ("lava-wait", &["--consume", "id"]),
        ],
        &[
            ("lava-send", &["--to", "b", "id"][..]),
            ("lava-wait", &["--consume", "id"]),
        ],
    );
}
