//! Process tests of the operator's actions: `lava-coordinator unblock|fail|send` against a
//! running coordinator, with and without the lab secret, and the tools that waited.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first.

use std::process::{Command, Output};

use lava_multinode_tests::tools::{GroupConfig, Node, Tools};
use lava_multinode_tests::{bin, start_coordinator_with_config, wait_until_held, STATE_DEADLINE};

const NACK: i32 = 4;
const SECRET: &str = "s3cret";

/// `lava-coordinator ARGS --address ADDR` with `secret` as LAVA_COORDINATOR_SECRET.
fn operator(addr: &str, secret: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("lava-coordinator"));
    cmd.args(["--config", "/nonexistent.conf"])
        .args(args)
        .args(["--address", addr])
        .env_remove("LAVA_COORDINATOR_SECRET");
    if let Some(secret) = secret {
        cmd.env("LAVA_COORDINATOR_SECRET", secret);
    }
    cmd.output().expect("run lava-coordinator")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_operator_unblocks_sends_and_fails_with_the_lab_secret_only() {
    // Loopback is exempt from the secret (as a lab's dispatchers are): not operator actions.
    let server = start_coordinator_with_config(
        Some(r#"{"secret": "s3cret", "secret_exempt": ["127.0.0.0/8"]}"#),
        &[],
    );
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "stuck", 3);
    let [a, b, c] = ["a", "b", "c"].map(|n| {
        let mut node = Node::new(&tools, &cfg, n, "r");
        node.set_env("LAVA_MULTINODE_SECRET", Some(SECRET));
        node
    });
    c.run("lava-send", &["here"]).ok();
    let waiting_a = a.spawn("lava-wait", &["go"]);
    let waiting_b = b.spawn("lava-sync", &["s"]);
    wait_until_held(&server.addr, "stuck", "a", "lava_wait go", STATE_DEADLINE);
    wait_until_held(&server.addr, "stuck", "b", "lava_sync s", STATE_DEADLINE);

    // Without the secret, or with a wrong one: refused, nothing happens, exempt or not.
    for secret in [None, Some("wrong")] {
        let out = operator(&server.addr, secret, &["unblock", "stuck"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("lacks the lab's secret"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = operator(
        &server.addr,
        Some(SECRET),
        &["unblock", "stuck", "--reason", "hung"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "group \"stuck\": answered 2 held requests\n"
    );
    for run in [waiting_a.wait(), waiting_b.wait()] {
        let err = run.fails(NACK);
        assert!(err.contains("unblocked group \"stuck\": hung"), "{err}");
    }

    let out = operator(&server.addr, Some(SECRET), &["send", "stuck", "go", "k=v"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(a.run("lava-wait", &["go"]).ok(), "operator:k=v\n");

    let waiting = a.spawn("lava-wait-all", &["done"]);
    wait_until_held(
        &server.addr,
        "stuck",
        "a",
        "lava_wait_all done",
        STATE_DEADLINE,
    );
    for sender in ["a", "b"] {
        let out = operator(
            &server.addr,
            Some(SECRET),
            &["send", "stuck", "done", "--as", sender],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = operator(
        &server.addr,
        Some(SECRET),
        &["fail", "stuck", "c", "powered", "off"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = waiting.wait();
    let err = run.fails(NACK);
    assert!(
        err.contains("\"c\" failed: powered off (declared by the operator"),
        "{err}"
    );

    let out = operator(&server.addr, Some(SECRET), &["fail", "stuck", "zed", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"zed\" is not a member"),
        "{}",
        text(&out.stderr)
    );
    let out = operator(&server.addr, Some(SECRET), &["unblock", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no group \"nope\""));
    assert!(server.log_text().contains("the operator"), "logged");
}

#[test]
fn a_coordinator_without_a_lab_secret_takes_no_operator_actions() {
    let server = start_coordinator_with_config(None, &[]);
    let out = operator(&server.addr, Some("anything"), &["unblock", "g"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("operator actions need a lab secret"),
        "{}",
        text(&out.stderr)
    );
    let out = operator(&server.addr, Some("x"), &["send", "g", "id", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
}
