//! The binary's command line as a test writer meets it: names, help, bad arguments.
//! (Also makes `cargo test --workspace` build the binary that the process-level tests in
//! `tests/` run.)

use std::process::Command;

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lava-multinode"))
        .args(args)
        .env_remove("LAVA_MULTINODE_COORDINATOR")
        .output()
        .expect("run lava-multinode")
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = tool(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "send",
        "wait-all",
        "sync",
        "start-vms",
        "wait-for-vms",
        "fail",
        "vm-group",
        "Exit status",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let out = tool(&["send"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("message ID"));
    let out = tool(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}
