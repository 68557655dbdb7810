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

#[test]
fn top_level_help_says_what_each_command_does() {
    let text = String::from_utf8_lossy(&tool(&["--help"]).stdout).into_owned();
    assert!(
        text.contains("  sync          wait until every member has reached the same point"),
        "{text}"
    );
    assert!(
        text.contains("  install       create the lava-* links in a folder"),
        "{text}"
    );
}

/// `install DIR` creates DIR; every link answers `--version` and `--help`.
#[test]
fn install_creates_its_folder_and_links_answer_version_and_help() {
    let dir = std::env::temp_dir().join(format!("lava-cli-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let target = dir.join("new/bin");
    let out = tool(&["install", &target.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for link in ["lava-send", "lava-wait-all", "lava-vm-done"] {
        let version = Command::new(target.join(link))
            .arg("--version")
            .output()
            .unwrap();
        assert!(version.status.success(), "{link} --version");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout),
            format!("{link} (lava-multinode) {}\n", env!("CARGO_PKG_VERSION"))
        );
        let help = Command::new(target.join(link))
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "{link} --help");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
