//! The binary's command line: help, configuration errors, listen errors.

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lava-coordinator"))
}

#[test]
fn help_lists_lavas_options_and_the_config_keys() {
    let out = coordinator().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--logfile",
        "--loglevel",
        "--listen",
        "block_max",
        "hold_lava_requests",
        "group_expiry",
    ] {
        assert!(
            text.contains(word),
            "--help does not mention {word}:\n{text}"
        );
    }
}

#[test]
fn a_bad_configuration_exits_2_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("lc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, r#"{"port": 3079, "block_max": "soon"}"#).unwrap();
    let out = coordinator()
        .args(["--logfile", "-", "--listen", "127.0.0.1:0", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf") && err.contains("block_max"),
        "{err}"
    );
}

#[test]
fn an_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = coordinator()
        .args([
            "--logfile",
            "-",
            "--config",
            "/nonexistent.conf",
            "--listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn a_bad_log_level_is_refused() {
    let out = coordinator()
        .args(["--loglevel", "CHATTY"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A port in use says so and how to choose another address.
#[test]
fn a_busy_port_names_how_to_choose_another() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = coordinator()
        .args(["--logfile", "/dev/null", "--state", ":memory:", "--config"])
        .arg("/nonexistent/lava-coordinator.conf")
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&format!("cannot listen on {addr}")), "{text}");
    assert!(text.contains("--listen ADDR:PORT"), "{text}");
}
