//! Process tests of failure scopes: `lava-failure-scope` with the real tools (a support
//! server that keeps waiting when a client fails), against our coordinator, Debian's
//! reference and the console.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use lava_multinode_tests::tools::{assert_extensions_need_ours, GroupConfig, Node, Tools};
use lava_multinode_tests::{
    held_requests, start_coordinator, wait_for_status, wait_until_held, STATE_DEADLINE,
};

const NACK: i32 = 4;

#[test]
fn a_server_scoped_to_servers_keeps_waiting_when_a_client_fails() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "support", 3);
    let srv = Node::new(&tools, &cfg, "srv", "server");
    let c1 = Node::new(&tools, &cfg, "c1", "client");
    let c2 = Node::new(&tools, &cfg, "c2", "client");
    c1.run("lava-send", &["here"]).ok();
    c2.run("lava-send", &["here"]).ok();
    srv.run("lava-failure-scope", &["server"]).ok();
    let err = srv
        .run("lava-failure-scope", &["nobody"])
        .fails(NACK)
        .to_owned();
    assert!(err.contains("has role \"nobody\""), "{err}");

    let server_waits = srv.spawn("lava-wait-all", &["done", "client"]);
    let client_waits = c2.spawn("lava-wait-all", &["done", "client"]);
    wait_until_held(
        &server.addr,
        "support",
        "srv",
        "lava_wait_all done client",
        STATE_DEADLINE,
    );
    wait_until_held(
        &server.addr,
        "support",
        "c2",
        "lava_wait_all done client",
        STATE_DEADLINE,
    );
    c1.run("lava-fail", &["oops"]).ok();
    let run = client_waits.wait();
    assert!(run.fails(NACK).contains("member \"c1\" failed: oops"));
    // The server's wait goes on: the client's failure is outside its scope.
    let status = wait_for_status(
        &server.addr,
        Some("support"),
        "c2 answered",
        STATE_DEADLINE,
        |s| !held_requests(s, "support").iter().any(|(c, _)| c == "c2"),
    );
    assert!(
        held_requests(&status, "support")
            .iter()
            .any(|(c, _)| c == "srv"),
        "{status}"
    );
    assert_eq!(
        status["groups"][0]["failure_scopes"]["srv"],
        serde_json::json!(["server"])
    );
    // Everybody's failures again: now the wait is hopeless.
    srv.run("lava-failure-scope", &["--all"]).ok();
    let run = server_waits.wait();
    assert!(run.fails(NACK).contains("member \"c1\" failed: oops"));

    srv.run("lava-failure-scope", &[]).fails(2);
    srv.run("lava-failure-scope", &["--none", "server"])
        .fails(2);
}

#[test]
fn against_lavas_coordinator_or_over_the_console_failure_scopes_say_they_need_ours() {
    assert_extensions_need_ours(
        &Tools::native(),
        &[("lava-failure-scope", &["--none"][..])],
        &[("lava-failure-scope", &["r"][..])],
    );
}
