//! Process tests of the target tools: the real `lava-multinode` binary, called through its
//! `lava-*` links as test writers call it, against our coordinator and Debian's reference.
//!
//! Run with `cargo build -p lava-multinode -p lava-coordinator` first (or through
//! `cargo test --workspace`, which builds every binary).

use std::time::{Duration, Instant};

use lava_multinode_tests::tools::{
    static_binary, static_required, GroupConfig, Node, Tools, REQUIRE_STATIC_ENV, STATIC_BUILDS,
    STATIC_MAX_BYTES,
};
use lava_multinode_tests::{
    bin, free_port, start_coordinator, start_reference, wait_for_port, wait_until_held,
    wait_until_not_held, STATE_DEADLINE,
};
use lava_protocol::message::Roles;
use lava_protocol::{Request, RequestKind};
use serde_json::json;

// Exit codes, as `--help` documents them.
const NEGATIVE: i32 = 1;
const USAGE: i32 = 2;
const CONFIG: i32 = 3;
const NACK: i32 = 4;
const TIMEOUT: i32 = 5;
const UNREACHABLE: i32 = 6;
const LOCAL: i32 = 7;

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The 3-node script: a host and two VM guests exchange data, sync, list the group and run
/// the VM start/stop gate, as the test shells of a VM group would.
fn three_node_script(tools: &Tools, addr: &str, group: &str) {
    let cfg = GroupConfig {
        timeout: 45.0,
        ..GroupConfig::new(addr, group, 3)
    };
    let host = Node::new(tools, &cfg, "host1", "host");
    let vm1 = Node::new(tools, &cfg, "vm1", "guest");
    let vm2 = Node::new(tools, &cfg, "vm2", "guest");
    let motd = "hello world = é ✓";

    let common = |n: &Node| {
        // The start barrier: every node is registered once the group answers.
        let group = n.run("lava-group", &[]);
        assert_eq!(
            group.sorted_lines(),
            sorted(&["host1\thost", "vm1\tguest", "vm2\tguest"])
        );
        let roles = n.run("lava-role", &["list"]);
        let mut roles: Vec<&str> = roles.ok().lines().collect();
        roles.sort();
        assert_eq!(roles, ["guest", "host"], "each role once");
        assert_eq!(n.run("lava-role", &[]).ok(), format!("{}\n", n.role));
        assert_eq!(n.run("lava-self", &[]).ok(), format!("{}\n", n.client));
        assert_eq!(
            n.run("lava-group", &["guest"]).sorted_lines(),
            sorted(&["vm1", "vm2"])
        );
        let none = n.run("lava-group", &["nobody"]);
        assert!(none.fails(NEGATIVE).contains("nobody"));
        assert_eq!(none.stdout, "");
    };

    let host_script = || {
        let n = &host;
        common(n);
        n.run(
            "lava-send",
            &["config", "server=host1", &format!("motd={motd}")],
        )
        .ok();
        assert_eq!(n.run("lava-sync", &["booted-sync"]).ok(), "");
        // Never waited: no cache file.
        assert_eq!(n.cache_text(), None);
        let booted = n.run("lava-multinode", &["wait-all", "booted", "guest"]);
        assert_eq!(
            booted.sorted_lines(),
            sorted(&[
                "vm1:name=vm1",
                "vm1:note=a  b",
                "vm2:name=vm2",
                "vm2:note=a  b"
            ])
        );
        assert_eq!(n.cache_text().as_deref(), Some(booted.stdout.as_str()));
        n.run("lava-send", &["ready", "node=host1"]).ok();
        let ready = n.run("lava-wait-all", &["ready"]);
        assert_eq!(
            ready.sorted_lines(),
            sorted(&["host1:node=host1", "vm1:node=vm1", "vm2:node=vm2"])
        );

        // VM gate: start, then wait for the guests' ends; vm2 fails in the first round.
        n.run("lava-start-vms", &["--host-ip", "10.0.2.2"]).ok();
        let vms = n.run("lava-wait-for-vms", &[]);
        let line = vms.fails(NEGATIVE);
        assert!(line.contains("vm2 (disk full)"), "{line}");
        assert!(!line.contains("vm1"), "{line}");
        n.run("lava-sync", &["round1"]).ok();
        // vm2 reports ok this time (a repeated send replaces the sender's data).
        n.run("lava-sync", &["round2"]).ok();
        assert_eq!(n.run("lava-wait-vms", &[]).ok(), "");
    };

    let guest_script = |n: &Node| {
        common(n);
        let config = n.run("lava-wait", &["config"]);
        assert_eq!(
            config.ok(),
            format!("host1:server=host1\nhost1:motd={motd}\n")
        );
        assert_eq!(n.cache_text().as_deref(), Some(config.stdout.as_str()));
        n.run(
            "lava-send",
            &["booted", &format!("name={}", n.client), "note=a  b"],
        )
        .ok();
        n.run("lava-sync", &["booted-sync"]).ok();
        // lava-sync leaves the cache alone.
        assert_eq!(n.cache_text().as_deref(), Some(config.stdout.as_str()));
        let booted = n.run("lava-wait-all", &["booted", "guest"]);
        assert_eq!(
            booted.sorted_lines(),
            sorted(&[
                "vm1:name=vm1",
                "vm1:note=a  b",
                "vm2:name=vm2",
                "vm2:note=a  b"
            ])
        );
        assert_eq!(n.cache_text().as_deref(), Some(booted.stdout.as_str()));
        n.run("lava-send", &["ready", &format!("node={}", n.client)])
            .ok();
        assert_eq!(n.run("lava-wait-all", &["ready"]).sorted_lines().len(), 3);

        // Wait for the start gate, then report the end.
        assert_eq!(
            n.run("lava-wait", &["lava_vm_start"]).ok(),
            "host1:host_ip=10.0.2.2\n"
        );
        if n.client == "vm2" {
            n.run("lava-vm-done", &["--failed", "disk full"]).ok();
        } else {
            n.run("lava-vm-done", &[]).ok();
        }
        n.run("lava-sync", &["round1"]).ok();
        if n.client == "vm2" {
            n.run("lava-vm-done", &[]).ok();
        }
        n.run("lava-sync", &["round2"]).ok();
    };

    std::thread::scope(|s| {
        let h = s.spawn(host_script);
        let g1 = s.spawn(|| guest_script(&vm1));
        let g2 = s.spawn(|| guest_script(&vm2));
        for (name, t) in [("host1", h), ("vm1", g1), ("vm2", g2)] {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(Box::new(format!("node {name} failed: {panic:?}")));
            }
        }
    });
}

#[test]
fn script_against_our_coordinator() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let started = Instant::now();
    three_node_script(&tools, &server.addr, "script-ours");
    eprintln!("3-node script against ours: {:?}", started.elapsed());
}

#[test]
fn script_against_the_reference_coordinator() {
    let server = start_reference();
    let tools = Tools::native();
    let started = Instant::now();
    three_node_script(&tools, &server.addr, "script-reference");
    eprintln!(
        "3-node script against the reference: {:?}",
        started.elapsed()
    );
}

/// The static builds of `packaging/build-static.sh`: x86_64 natively, aarch64 and armv7
/// under qemu-user; each static, under 1 MiB, and resolving a host name (`localhost`, from
/// /etc/hosts) with musl's own resolver, no NSS. Missing ones are skipped, unless
/// LAVA_MULTINODE_REQUIRE_STATIC=1.
#[test]
fn script_with_static_binaries() {
    let mut ran = 0;
    for &(triple, runner) in STATIC_BUILDS {
        let binary = static_binary(triple);
        let runner_missing = runner.is_some_and(|r| !std::path::Path::new(r).exists());
        if !binary.exists() || runner_missing {
            let why = if binary.exists() {
                format!(
                    "{} is missing (apt-get install qemu-user-static)",
                    runner.unwrap_or("")
                )
            } else {
                format!(
                    "{} is missing (run packaging/build-static.sh)",
                    binary.display()
                )
            };
            assert!(!static_required(), "{REQUIRE_STATIC_ENV}=1 but {why}");
            eprintln!("skipping the {triple} binary: {why}");
            continue;
        }
        let size = std::fs::metadata(&binary).map_or(0, |m| m.len());
        assert!(
            size > 0 && size < STATIC_MAX_BYTES,
            "{triple}: {size} bytes, not under {STATIC_MAX_BYTES}"
        );
        let info = std::process::Command::new("file")
            .arg("-b")
            .arg(&binary)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(info.contains("statically linked"), "{triple}: {info}");
        let tools = Tools::new(binary, runner.map(Into::into));
        let server = start_coordinator(&[]);
        let started = Instant::now();
        three_node_script(&tools, &server.addr, &format!("script-{triple}"));
        eprintln!("3-node script with {triple}: {:?}", started.elapsed());
        // The coordinator by name: a group of one syncs at once.
        let port = server.addr.rsplit(':').next().expect("HOST:PORT");
        let by_name = GroupConfig::new(&format!("localhost:{port}"), &format!("name-{triple}"), 1);
        Node::new(&tools, &by_name, "solo", "solo")
            .run("lava-sync", &["alive"])
            .ok();
        ran += 1;
    }
    eprintln!("{ran} static binaries tested");
}

/// Against our coordinator the tools block instead of polling: a wait is answered as soon
/// as the data arrives, although the polling interval is long.
#[test]
fn waits_block_instead_of_polling() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig {
        poll: 5.0,
        timeout: 30.0,
        ..GroupConfig::new(&server.addr, "block", 2)
    };
    let a = Node::new(&tools, &cfg, "a", "server");
    let b = Node::new(&tools, &cfg, "b", "client");

    let mut wait = b.spawn("lava-wait", &["go"]);
    let mut wait_all = b.spawn("lava-wait-all", &["all"]);
    // Both asked, and the coordinator holds them (they did not just poll and go to sleep).
    wait_until_held(&server.addr, "block", "b", "lava_wait go", STATE_DEADLINE);
    wait_until_held(
        &server.addr,
        "block",
        "b",
        "lava_wait_all all",
        STATE_DEADLINE,
    );
    assert!(wait.running() && wait_all.running());
    a.run("lava-send", &["go", "k=v"]).ok();
    let sent = Instant::now();
    let run = wait.wait();
    assert_eq!(run.ok(), "a:k=v\n");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );

    // wait-all without role: until every member sent.
    a.run("lava-send", &["all", "from=a"]).ok();
    // a's send has been answered: had it released the wait-all, the coordinator would no
    // longer hold it.
    wait_until_held(
        &server.addr,
        "block",
        "b",
        "lava_wait_all all",
        STATE_DEADLINE,
    );
    assert!(wait_all.running(), "wait-all returned before b sent");
    b.run("lava-send", &["all", "from=b"]).ok();
    let sent = Instant::now();
    assert_eq!(
        wait_all.wait().sorted_lines(),
        sorted(&["a:from=a", "b:from=b"])
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );

    // A sync: the second arrival releases the first at once.
    let first = a.spawn("lava-sync", &["s"]);
    wait_until_held(&server.addr, "block", "a", "lava_sync s", STATE_DEADLINE);
    let second = b.run("lava-sync", &["s"]);
    second.ok();
    let first = first.wait();
    first.ok();
    assert!(
        second.elapsed < Duration::from_secs(2),
        "{:?}",
        second.elapsed
    );
}

/// The launcher declares the roster; a guest that knows no group size lists the group at
/// once, before the other members registered.
#[test]
fn declared_roster_answers_before_the_group_is_complete() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let mut roster = Roles::new();
    for (c, r) in [("host1", "host"), ("vm1", "guest"), ("vm2", "guest")] {
        roster.insert(c.into(), r.into());
    }
    let mut declare = Request::new(
        "declared",
        "host1",
        "host",
        RequestKind::DeclareRoster { roster },
    );
    declare.group_size = Some(3);
    declare.hostname = Some("launcher".into());
    let reply = server.client().call(&declare).expect("declare roster");
    assert!(reply.error.is_none(), "{reply:?}");

    let cfg = GroupConfig {
        group_size: None,
        timeout: 5.0,
        ..GroupConfig::new(&server.addr, "declared", 3)
    };
    let vm1 = Node::new(&tools, &cfg, "vm1", "guest");
    let group = vm1.run("lava-group", &[]);
    assert!(
        group.elapsed < Duration::from_secs(2),
        "{:?}",
        group.elapsed
    );
    assert_eq!(group.ok(), "host1\thost\nvm1\tguest\nvm2\tguest\n");
    assert_eq!(vm1.run("lava-role", &["list"]).ok(), "host\nguest\n");
    assert_eq!(vm1.run("lava-group", &["guest"]).ok(), "vm1\nvm2\n");
    // A role nobody has is refused at once, with the coordinator's reason.
    let nack = vm1.run("lava-wait-all", &["x", "nobody"]);
    assert!(nack.fails(NACK).contains("nobody"));
}

#[test]
fn start_vms_defaults_to_the_address_towards_the_coordinator() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "hostip", 2);
    let host = Node::new(&tools, &cfg, "host1", "host");
    let vm = Node::new(&tools, &cfg, "vm1", "guest");
    host.run("lava-start-vms", &[]).ok();
    assert_eq!(
        vm.run("lava-wait", &["lava_vm_start"]).ok(),
        "host1:host_ip=127.0.0.1\n"
    );
    let mut env_host = Node::new(&tools, &cfg, "host1", "host");
    env_host.set_env("LAVA_MULTINODE_HOST_IP", Some("192.0.2.7"));
    env_host.run("lava-start-vms", &[]).ok();
    assert_eq!(
        vm.run("lava-wait", &["lava_vm_start"]).ok(),
        "host1:host_ip=192.0.2.7\n"
    );
}

/// Values other clients sent as JSON numbers, booleans or null print as their JSON text
/// (null as nothing); the cache file is replaced by a wait, left alone by a sync, and removed
/// by a wait that fails.
#[test]
fn cache_file_and_value_formatting() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig {
        timeout: 10.0,
        ..GroupConfig::new(&server.addr, "cache", 2)
    };
    let a = Node::new(&tools, &cfg, "a", "one");
    let b = Node::new(&tools, &cfg, "b", "two");
    let mut send = Request::new(
        "cache",
        "a",
        "one",
        RequestKind::Send {
            id: "typed".into(),
            message: json!({"n": 3, "f": 1.5, "z": null, "t": true, "s": "x y", "e": ""}),
        },
    );
    send.group_size = Some(2);
    send.hostname = Some("raw".into());
    server.client().call(&send).expect("raw send");

    std::fs::write(&b.cache, "stale:old=1\n").unwrap();
    let run = b.run("lava-wait", &["typed"]);
    let expected = "a:n=3\na:f=1.5\na:z=\na:t=true\na:s=x y\na:e=\n";
    assert_eq!(run.ok(), expected);
    assert_eq!(b.cache_text().as_deref(), Some(expected));

    // lava-sync leaves the cache alone.
    let other = a.spawn("lava-sync", &["s1"]);
    b.run("lava-sync", &["s1"]).ok();
    other.wait().ok();
    assert_eq!(b.cache_text().as_deref(), Some(expected));

    // A failed wait leaves no stale data.
    let mut quick = Node::new(&tools, &cfg, "b", "two");
    quick.set_env("LAVA_MULTINODE_TIMEOUT", Some("0.5"));
    std::fs::write(&quick.cache, "stale:old=1\n").unwrap();
    quick.run("lava-wait", &["never"]).fails(TIMEOUT);
    assert_eq!(quick.cache_text(), None);

    // An unwritable cache file is a local error (the data is still printed).
    let mut broken = Node::new(&tools, &cfg, "b", "two");
    broken.set_env("LAVA_MULTI_NODE_CACHE", Some("/nonexistent-dir/cache.txt"));
    let run = broken.run("lava-wait", &["typed"]);
    assert!(run.fails(LOCAL).contains("/nonexistent-dir/cache.txt"));
    assert_eq!(run.stdout, expected);
}

#[test]
fn error_paths() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig {
        timeout: 1.0,
        ..GroupConfig::new(&server.addr, "errors", 2)
    };
    let a = Node::new(&tools, &cfg, "a", "server");

    // Timeout: one clear line, exit 5, on time.
    let run = a.run("lava-wait", &["never"]);
    let line = run.fails(TIMEOUT);
    assert!(line.starts_with("lava-wait: timed out after 1 s"), "{line}");
    assert!(line.contains("\"never\""), "{line}");
    assert!(run.elapsed < Duration::from_secs(3), "{:?}", run.elapsed);
    a.run("lava-sync", &["alone"]).fails(TIMEOUT);
    a.run("lava-group", &[]).fails(TIMEOUT);

    // Unreachable coordinator: retried until the timeout, then exit 6.
    let dead = format!("127.0.0.1:{}", free_port());
    let mut down = Node::new(&tools, &cfg, "a", "server");
    down.set_env("LAVA_MULTINODE_COORDINATOR", Some(&dead));
    let run = down.run("lava-send", &["x", "k=v"]);
    let line = run.fails(UNREACHABLE);
    assert!(
        line.contains(&dead) && line.contains("unreachable"),
        "{line}"
    );
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(4),
        "{:?}",
        run.elapsed
    );

    // nack from our coordinator: exit 4 with its reason (a client beyond the group size).
    let b = Node::new(&tools, &cfg, "b", "client");
    a.run("lava-send", &["hello"]).ok();
    b.run("lava-send", &["hello"]).ok();
    let c = Node::new(&tools, &cfg, "c", "client");
    let line = c.run("lava-send", &["hello"]).fails(NACK).to_owned();
    assert!(
        line.starts_with("lava-send: coordinator refused `lava_send`: "),
        "{line}"
    );
    let line = a
        .run("lava-wait-all", &["hello", "nobody"])
        .fails(NACK)
        .to_owned();
    assert!(line.contains("nobody"), "{line}");

    // Missing configuration: every place looked at is named.
    let mut bare = Node::new(&tools, &cfg, "a", "server");
    bare.set_env("LAVA_MULTINODE_COORDINATOR", None);
    let run = bare.run("lava-send", &["x"]);
    let line = run.fails(CONFIG);
    let conf = bare.conf_file().display().to_string();
    let cmdline = bare.cmdline_file().display().to_string();
    for place in [
        "--coordinator".to_owned(),
        "$LAVA_MULTINODE_COORDINATOR".to_owned(),
        format!("LAVA_MULTINODE_COORDINATOR= in {conf}"),
        format!("lava_multinode.coordinator= in {cmdline}"),
    ] {
        assert!(line.contains(&place), "{place} not in {line}");
    }
    bare.set_env("LAVA_MULTINODE_CLIENT", None);
    assert!(bare
        .run("lava-self", &[])
        .fails(CONFIG)
        .contains("client name"));
    let mut named = Node::new(&tools, &cfg, "a", "server");
    named.set_env(
        "LAVA_MULTINODE_CONF",
        Some("/nonexistent/lava-multinode.conf"),
    );
    assert!(named
        .run("lava-self", &[])
        .fails(CONFIG)
        .contains("/nonexistent/lava-multinode.conf"));

    // Invalid settings.
    let line = a
        .run("lava-wait", &["x", "--timeout", "soon"])
        .fails(CONFIG)
        .to_owned();
    assert!(
        line.contains("\"soon\"") && line.contains("command line"),
        "{line}"
    );
    let mut bad_size = Node::new(&tools, &cfg, "a", "server");
    bad_size.set_env("LAVA_MULTINODE_GROUP_SIZE", Some("two"));
    assert!(bad_size
        .run("lava-send", &["x"])
        .fails(CONFIG)
        .contains("environment"));
    a.run("lava-send", &["x", "--coordinator", "host:port"])
        .fails(CONFIG);

    // Bad arguments: exit 2, one line pointing at --help; nothing is sent.
    for (tool, args) in [
        ("lava-send", &[][..]),
        ("lava-send", &["id", "novalue"]),
        ("lava-send", &["id", "k=two\nlines"]),
        ("lava-send", &["", "k=v"]),
        ("lava-wait", &[]),
        // Several IDs are an any-of wait; an empty one is refused.
        ("lava-wait", &["a", ""]),
        ("lava-wait", &["--consume", "a", "b"]),
        ("lava-wait-all", &["a", "b", "c"]),
        ("lava-sync", &["a", "--bogus"]),
        ("lava-role", &["lsit"]),
        ("lava-self", &["extra"]),
        ("lava-group", &["a", "b"]),
        ("lava-vm-done", &["--failed"]),
        ("lava-start-vms", &["now"]),
        ("lava-wait-for-vms", &["-x"]),
        ("lava-multinode", &["frobnicate"]),
        ("lava-multinode", &[]),
    ] {
        let run = a.run(tool, args);
        assert_eq!(run.code, USAGE, "{tool} {args:?}: {run:?}");
        assert!(
            run.stderr.contains("--help"),
            "{tool} {args:?}: {}",
            run.stderr
        );
    }
    let run = a.run("lava-send", &["id", "k=two\nlines"]);
    assert!(run.stderr.contains("line break"), "{}", run.stderr);
}

/// A coordinator that comes up late: the tools retry with backoff and succeed.
#[test]
fn retries_until_the_coordinator_is_up() {
    let tools = Tools::native();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = GroupConfig {
        timeout: 20.0,
        ..GroupConfig::new(&addr, "late", 2)
    };
    let a = Node::new(&tools, &cfg, "a", "server");
    let b = Node::new(&tools, &cfg, "b", "client");
    let send = a.spawn("lava-send", &["early", "k=v"]);
    let wait = b.spawn("lava-wait", &["early"]);
    // Not synchronisation: the coordinator must come up late, while the tools retry.
    std::thread::sleep(Duration::from_millis(1500));

    let dir = lava_multinode_tests::TempDir::new("late-coordinator");
    let mut child = std::process::Command::new(bin("lava-coordinator"))
        .args(["--listen", &addr, "--loglevel", "DEBUG", "--logfile"])
        .arg(dir.path().join("log"))
        .args(["--config", "/nonexistent/lava-coordinator.conf"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start lava-coordinator");
    assert!(wait_for_port(&addr, Duration::from_secs(10)));
    let sent = send.wait();
    let waited = wait.wait();
    let _ = child.kill();
    let _ = child.wait();
    sent.ok();
    assert_eq!(waited.ok(), "a:k=v\n");
    // It cannot have succeeded before the coordinator started, 1.5 s after it did.
    assert!(
        sent.elapsed >= Duration::from_millis(1500),
        "{:?}",
        sent.elapsed
    );
}

/// Against LAVA's coordinator: a bare `nack` (here: a send to an unknown group without a
/// group size) is exit 4 too, and polling honours the timeout.
#[test]
fn reference_nack_and_timeout() {
    let server = start_reference();
    let tools = Tools::native();
    let cfg = GroupConfig {
        group_size: None,
        timeout: 1.0,
        ..GroupConfig::new(&server.addr, "ref-errors", 2)
    };
    let a = Node::new(&tools, &cfg, "a", "server");
    let line = a.run("lava-send", &["x", "k=v"]).fails(NACK).to_owned();
    assert!(line.contains("no reason given"), "{line}");
    let mut sized = Node::new(&tools, &cfg, "a", "server");
    sized.set_env("LAVA_MULTINODE_GROUP_SIZE", Some("2"));
    let run = sized.run("lava-wait", &["never"]);
    run.fails(TIMEOUT);
    assert!(run.elapsed < Duration::from_secs(4), "{:?}", run.elapsed);
}

/// Settings from the configuration file and the kernel command line, under flags and
/// environment variables.
#[test]
fn configuration_sources() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "sources", 2);
    let mut vm = Node::new(&tools, &cfg, "ignored", "ignored");
    for key in [
        "LAVA_MULTINODE_COORDINATOR",
        "LAVA_MULTINODE_GROUP",
        "LAVA_MULTINODE_CLIENT",
        "LAVA_MULTINODE_ROLE",
        "LAVA_MULTINODE_GROUP_SIZE",
    ] {
        vm.set_env(key, None);
    }
    // A VM image with nothing but the kernel command line.
    std::fs::write(
        vm.cmdline_file(),
        format!(
            "console=ttyAMA0 root=/dev/vda lava_multinode.coordinator={} \
             lava_multinode.group=sources lava_multinode.client=vm1 \
             lava_multinode.role=\"vm guest\" lava_multinode.group_size=2\n",
            server.addr
        ),
    )
    .unwrap();
    assert_eq!(vm.run("lava-self", &[]).ok(), "vm1\n");
    assert_eq!(vm.run("lava-role", &[]).ok(), "vm guest\n");
    vm.run("lava-send", &["from-cmdline", "k=1"]).ok();

    // The file beats the command line, the environment the file, a flag the environment.
    std::fs::write(
        vm.conf_file(),
        "# test\nLAVA_MULTINODE_CLIENT=vm-file\nexport LAVA_MULTINODE_ROLE='file role'\n",
    )
    .unwrap();
    assert_eq!(vm.run("lava-self", &[]).ok(), "vm-file\n");
    assert_eq!(vm.run("lava-role", &[]).ok(), "file role\n");
    vm.set_env("LAVA_MULTINODE_CLIENT", Some("vm-env"));
    assert_eq!(vm.run("lava-self", &[]).ok(), "vm-env\n");
    assert_eq!(
        vm.run("lava-self", &["--client", "vm-flag"]).ok(),
        "vm-flag\n"
    );
    assert_eq!(
        vm.run("lava-self", &["--client=vm-flag2"]).ok(),
        "vm-flag2\n"
    );

    let host = Node::new(&tools, &cfg, "host1", "host");
    assert_eq!(host.run("lava-wait", &["from-cmdline"]).ok(), "vm1:k=1\n");
}

#[test]
fn install_help_and_subcommands() {
    let tools = Tools::native();
    for tool in [
        "lava-send",
        "lava-wait",
        "lava-wait-all",
        "lava-sync",
        "lava-start-vms",
        "lava-wait-for-vms",
        "lava-wait-vms",
        "lava-vm-done",
        "lava-fail",
        "lava-lock",
        "lava-unlock",
        "lava-failure-scope",
        "lava-self",
        "lava-role",
        "lava-group",
    ] {
        let link = tools.link(tool);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert_eq!(
            std::fs::canonicalize(link.parent().unwrap().join(target)).unwrap(),
            std::fs::canonicalize(tools.binary()).unwrap()
        );
        let help = tools.command(tool, &["--help"]).output().unwrap();
        assert!(help.status.success());
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("Usage: ") && text.contains("Exit status"),
            "{tool}: {text}"
        );
        assert!(
            text.contains("4  the coordinator refused"),
            "{tool}: {text}"
        );
    }
    let main = tools
        .command("lava-multinode", &["--help"])
        .output()
        .unwrap();
    assert!(main.status.success());
    assert!(String::from_utf8_lossy(&main.stdout).contains("install"));

    // Sub-command form.
    let cfg = GroupConfig::new("127.0.0.1:9", "g", 2);
    let node = Node::new(&tools, &cfg, "c1", "r1");
    assert_eq!(node.run("lava-multinode", &["self"]).ok(), "c1\n");
    assert_eq!(node.run("lava-multinode", &["lava-role"]).ok(), "r1\n");

    // install replaces its links, refuses other files unless --force.
    let dir = tools.dir().display().to_string();
    node.run("lava-multinode", &["install", &dir]).ok();
    let other = tools.dir().join("lava-self");
    std::fs::remove_file(&other).unwrap();
    std::fs::write(&other, "#!/bin/sh\n").unwrap();
    let run = node.run("lava-multinode", &["install", &dir]);
    assert!(run.fails(LOCAL).contains("--force"));
    node.run("lava-multinode", &["install", "--force", &dir])
        .ok();
    assert!(std::fs::symlink_metadata(&other)
        .unwrap()
        .file_type()
        .is_symlink());
    // A folder that cannot be made, even by root (install makes a missing one): its parent
    // is a file.
    let below_a_file = node.conf_file().join("dir");
    node.run(
        "lava-multinode",
        &["install", &below_a_file.display().to_string()],
    )
    .fails(LOCAL);
}

#[test]
fn secrets_come_from_the_environment_the_file_or_the_kernel_command_line() {
    let server =
        lava_multinode_tests::start_coordinator_with_config(Some(r#"{"secret": "lab-key"}"#), &[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "secret-group", 2);
    let mut a = Node::new(&tools, &cfg, "a", "r");
    // No lab secret: refused with the coordinator's reason.
    assert!(a
        .run("lava-send", &["m", "k=v"])
        .fails(NACK)
        .contains("secret"));
    // A flag would show in `ps`: there is none.
    assert_eq!(
        a.run("lava-send", &["--secret", "lab-key", "m"]).code,
        USAGE
    );
    a.set_env("LAVA_MULTINODE_SECRET", Some("lab-key"));
    a.set_env("LAVA_MULTINODE_GROUP_SECRET", Some("grp-key"));
    a.run("lava-send", &["m", "k=v"]).ok();
    // b has the lab secret in its file and the group's on its kernel command line.
    let b = Node::new(&tools, &cfg, "b", "r");
    std::fs::write(b.conf_file(), "LAVA_MULTINODE_SECRET=lab-key\n").unwrap();
    assert!(b
        .run("lava-wait", &["m"])
        .fails(NACK)
        .contains("group_secret"));
    std::fs::write(
        b.cmdline_file(),
        "quiet lava_multinode.group_secret=grp-key\n",
    )
    .unwrap();
    assert_eq!(b.run("lava-wait", &["m"]).ok(), "a:k=v\n");
}

/// Issue 8: one node fails mid-script; the others, blocked on it, exit non-zero within a
/// second naming it and its reason.
#[test]
fn a_failed_node_ends_the_others_waits_at_once() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "failing", 3);
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|c| Node::new(&tools, &cfg, c, "r"))
        .collect();
    for n in &nodes {
        n.run("lava-send", &["up"]).ok();
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| a.run("lava-sync", &["step1"]));
        let wait_all = scope.spawn(|| b.run("lava-wait-all", &["result"]));
        wait_until_held(
            &server.addr,
            "failing",
            "a",
            "lava_sync step1",
            STATE_DEADLINE,
        );
        wait_until_held(
            &server.addr,
            "failing",
            "b",
            "lava_wait_all result",
            STATE_DEADLINE,
        );
        let failed_at = Instant::now();
        c.run("lava-fail", &["build", "failed:", "no", "space"])
            .ok();
        for run in [sync.join().unwrap(), wait_all.join().unwrap()] {
            let err = run.fails(NACK);
            assert!(
                err.contains("\"c\"") && err.contains("build failed: no space"),
                "{err}"
            );
            assert!(
                failed_at.elapsed() < Duration::from_secs(1),
                "{:?}",
                failed_at.elapsed()
            );
        }
    });
}

/// Issue 8: every node waits for something nobody will send (mismatched ids): all are told
/// at once, with who waits on what.
#[test]
fn a_deadlocked_group_is_reported_at_once() {
    let server = start_coordinator(&[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "stuck", 2);
    let a = Node::new(&tools, &cfg, "a", "r");
    let b = Node::new(&tools, &cfg, "b", "r");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let wa = scope.spawn(|| a.run("lava-wait", &["ready-b"]));
        let wb = scope.spawn(|| b.run("lava-wait", &["ready_a"]));
        for run in [wa.join().unwrap(), wb.join().unwrap()] {
            let err = run.fails(NACK);
            assert!(
                err.contains("deadlock")
                    && err.contains("a waits for lava_wait ready-b")
                    && err.contains("b waits for lava_wait ready_a"),
                "{err}"
            );
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(server.log_text().contains("deadlock in group \"stuck\""));
}

/// Issue 8: a tool killed while it waits stops renewing its lease; the others, waiting on
/// it, are told soon after.
#[test]
fn a_killed_waiting_tool_is_counted_gone_after_its_lease() {
    let server =
        lava_multinode_tests::start_coordinator_with_config(Some(r#"{"block_max": 0.5}"#), &[]);
    let tools = Tools::native();
    let cfg = GroupConfig::new(&server.addr, "lease", 2);
    let mut a = Node::new(&tools, &cfg, "a", "r");
    a.set_env("LAVA_MULTINODE_LEASE", Some("0.5"));
    let b = Node::new(&tools, &cfg, "b", "r");
    let mut waiting = a.command("lava-wait", &["never"]).spawn().unwrap();
    wait_until_held(
        &server.addr,
        "lease",
        "a",
        "lava_wait never",
        STATE_DEADLINE,
    );
    waiting.kill().unwrap();
    waiting.wait().unwrap();
    let killed_at = Instant::now();
    // Once a's held request has ended (block_max), a is no longer held: no deadlock verdict,
    // only its lease can tell that it is gone.
    wait_until_not_held(&server.addr, "lease", "a", STATE_DEADLINE);
    // b needs a's "result": once a's lease ran out, b is told.
    let run = b.run("lava-wait-all", &["result"]);
    let err = run.fails(NACK);
    assert!(
        err.contains("\"a\"") && err.contains("lease expired"),
        "{err}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed_at.elapsed()
    );
    assert!(server.log_text().contains("lease expired"));
}

/// A node on the console transport (`LAVA_MULTINODE_TRANSPORT=console`): no coordinator,
/// group, client or role set, since LAVA's markers carry none.
fn console_node<'a>(tools: &'a Tools, timeout: f64) -> Node<'a> {
    let cfg = GroupConfig {
        timeout,
        ..GroupConfig::new("127.0.0.1:1", "unused", 2)
    };
    let mut node = Node::new(tools, &cfg, "unused", "unused");
    for key in [
        "LAVA_MULTINODE_COORDINATOR",
        "LAVA_MULTINODE_GROUP",
        "LAVA_MULTINODE_CLIENT",
        "LAVA_MULTINODE_ROLE",
        "LAVA_MULTINODE_GROUP_SIZE",
    ] {
        node.set_env(key, None);
    }
    node.set_env("LAVA_MULTINODE_TRANSPORT", Some("console"));
    node
}

/// Over the console, each tool prints LAVA's marker and reads the reply the relay (here the
/// test) types back, after the console's echo and noise; output and cache file are as with
/// TCP.
#[test]
fn console_transport_send_wait_wait_all_sync() {
    let tools = Tools::native();
    let node = console_node(&tools, 20.0);

    // lava-send: the marker, no reply read.
    let run = node.run(
        "lava-send",
        &["ready", "ip=10.0.2.15", "motd=hello world", "e="],
    );
    assert_eq!(
        run.ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.2.15 motd=hello world e=>\n"
    );

    // lava-wait: echo, boot noise, escape sequences and another call's reply come first.
    std::fs::write(&node.cache, "stale:old=1\n").unwrap();
    let mut wait = node.console("lava-wait", &["ready"]);
    assert_eq!(wait.read_line(), "<LAVA_MULTI_NODE> <LAVA_WAIT ready>");
    wait.type_text(
        "lava-wait ready\r\n[   12.345678] random: crng init done\r\n\
         <LAVA_WAIT_ALL_COMPLETE x:k=v>\r\n\
         \x1b[0m\x1b[?2004l<LAVA_WAIT_COMPLETE host:ip=10.0.2.2 host:motd=hello world>\r\n\n",
    );
    let run = wait.finish();
    let data = "host:ip=10.0.2.2\nhost:motd=hello world\n";
    assert_eq!(
        run.ok(),
        format!("<LAVA_MULTI_NODE> <LAVA_WAIT ready>\n{data}")
    );
    assert_eq!(node.cache_text().as_deref(), Some(data));

    // lava-wait-all with a role.
    let mut all = node.console("lava-wait-all", &["booted", "guest"]);
    assert_eq!(
        all.read_line(),
        "<LAVA_MULTI_NODE> <LAVA_WAIT_ALL booted guest>"
    );
    all.type_text("<LAVA_WAIT_ALL_COMPLETE vm1:ip=10.0.2.15 vm2:ip=10.0.2.16>\n\n");
    let data = "vm1:ip=10.0.2.15\nvm2:ip=10.0.2.16\n";
    let run = all.finish();
    assert!(run.ok().ends_with(data), "{}", run.stdout);
    assert_eq!(node.cache_text().as_deref(), Some(data));

    // lava-sync leaves the cache file alone.
    let mut sync = node.console("lava-sync", &["done"]);
    assert_eq!(sync.read_line(), "<LAVA_MULTI_NODE> <LAVA_SYNC done>");
    sync.type_text("<LAVA_SYNC_COMPLETE>\n\n");
    assert_eq!(sync.finish().ok(), "<LAVA_MULTI_NODE> <LAVA_SYNC done>\n");
    assert_eq!(node.cache_text().as_deref(), Some(data));

    // The transport may come from the kernel command line too.
    let mut vm = console_node(&tools, 20.0);
    vm.set_env("LAVA_MULTINODE_TRANSPORT", None);
    std::fs::write(
        vm.cmdline_file(),
        "quiet lava_multinode.transport=console\n",
    )
    .unwrap();
    assert_eq!(
        vm.run("lava-send", &["x"]).ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND x>\n"
    );
    std::fs::write(vm.cmdline_file(), "lava_multinode.transport=serial\n").unwrap();
    let run = vm.run("lava-send", &["x"]);
    let line = run.fails(CONFIG);
    assert!(
        line.contains("\"serial\"") && line.contains("lava_multinode.transport="),
        "{line}"
    );
}

/// nack, timeout, a closed console, lava-fail without a relay, and what cannot travel in a
/// marker: each a clear line and its exit code.
#[test]
fn console_transport_errors() {
    let tools = Tools::native();
    let node = console_node(&tools, 1.0);

    // nack: the relay refused (exit 4, as a coordinator's nack).
    let mut sync = node.console("lava-sync", &["s"]);
    assert_eq!(sync.read_line(), "<LAVA_MULTI_NODE> <LAVA_SYNC s>");
    sync.type_text("<LAVA_SYNC_COMPLETE nack>\n\n");
    let run = sync.finish();
    let line = run.fails(NACK);
    assert!(
        line.contains("relay refused <LAVA_MULTI_NODE> <LAVA_SYNC s>"),
        "{line}"
    );

    // No reply within the timeout (the console stays open): exit 5, on time; no stale
    // cache file.
    std::fs::write(&node.cache, "stale:old=1\n").unwrap();
    let mut wait = node.console("lava-wait", &["never"]);
    assert_eq!(wait.read_line(), "<LAVA_MULTI_NODE> <LAVA_WAIT never>");
    wait.type_text("noise\n<LAVA_WAIT_COMPLETE_ACK>\n");
    let run = wait.finish();
    let line = run.fails(TIMEOUT);
    assert!(line.starts_with("lava-wait: timed out after 1 s"), "{line}");
    assert!(line.contains("\"never\""), "{line}");
    assert!(run.elapsed < Duration::from_secs(3), "{:?}", run.elapsed);
    assert_eq!(node.cache_text(), None);

    // The console closes before the reply: exit 6.
    let mut wait = node.console("lava-wait-all", &["m"]);
    wait.read_line();
    wait.type_text("noise\n");
    wait.close();
    let run = wait.finish();
    assert!(
        run.fails(UNREACHABLE).contains("console closed"),
        "{}",
        run.stderr
    );
    assert!(node
        .run("lava-sync", &["s"])
        .fails(UNREACHABLE)
        .contains("console closed"));

    // lava-fail: our relay answers; LAVA's dispatcher does not, so it fails after
    // min(timeout, 10 s).
    let mut fail = node.console("lava-fail", &["disk", "full"]);
    assert_eq!(fail.read_line(), "<LAVA_MULTI_NODE> <LAVA_FAIL disk full>");
    fail.type_text("<LAVA_FAIL_COMPLETE>\n\n");
    fail.finish().ok();
    let mut fail = node.console("lava-fail", &["disk", "full"]);
    fail.read_line();
    let run = fail.finish();
    let line = run.fails(LOCAL);
    assert!(line.contains("no relay answered LAVA_FAIL"), "{line}");
    assert!(
        run.elapsed >= Duration::from_millis(900) && run.elapsed < Duration::from_secs(4),
        "{:?}",
        run.elapsed
    );

    // What cannot travel in a marker is refused naming it; nothing is printed.
    for (tool, args, names) in [
        ("lava-send", &["two words", "k=v"][..], "\"two words\""),
        ("lava-send", &["id", "a-b=1"], "\"a-b\""),
        ("lava-send", &["id", "cmd=x=y"], "'='"),
        ("lava-send", &["id", "html=<b>"], "'<'"),
        ("lava-wait", &["a>b"], "'>'"),
        ("lava-wait-all", &["id", "two roles"], "\"two roles\""),
    ] {
        let run = node.run(tool, args);
        let line = run.fails(USAGE);
        assert!(line.contains(names), "{tool} {args:?}: {line}");
        assert_eq!(run.stdout, "", "{tool} {args:?}");
    }

    // LAVA_MULTINODE_DEBUG shows what is printed and read.
    let mut debug = console_node(&tools, 5.0);
    debug.set_env("LAVA_MULTINODE_DEBUG", Some("1"));
    let mut wait = debug.console("lava-wait", &["m"]);
    wait.read_line();
    wait.type_text("echo\n<LAVA_WAIT_COMPLETE a:k=v>\n");
    let run = wait.finish();
    run.ok();
    for line in [
        "> <LAVA_MULTI_NODE> <LAVA_WAIT m>",
        "< echo",
        "< <LAVA_WAIT_COMPLETE a:k=v>",
    ] {
        assert!(run.stderr.contains(line), "{line:?} not in {}", run.stderr);
    }
}

/// Identity over the console: our settings, else the variables LAVA's test shell sets.
#[test]
fn console_transport_identity_from_lavas_variables() {
    let tools = Tools::native();
    let mut node = console_node(&tools, 5.0);
    // As LAVA's test shell writes it: escapes for printf, after a line break.
    node.set_env(
        "LAVA_GROUP",
        Some("\n\\tjob.0\\tserver\\n\\tjob.1\\tclient\\n\\tjob.2\\tclient\\n"),
    );
    node.set_env("LAVA_HOSTNAME", Some("job.1"));
    node.set_env("TARGET_ROLE", Some("client"));
    assert_eq!(
        node.run("lava-group", &[]).ok(),
        "job.0\tserver\njob.1\tclient\njob.2\tclient\n"
    );
    assert_eq!(node.run("lava-group", &["client"]).ok(), "job.1\njob.2\n");
    assert!(node
        .run("lava-group", &["nobody"])
        .fails(NEGATIVE)
        .contains("\"nobody\""));
    assert_eq!(node.run("lava-role", &["list"]).ok(), "server\nclient\n");
    assert_eq!(node.run("lava-self", &[]).ok(), "job.1\n");
    assert_eq!(node.run("lava-role", &[]).ok(), "client\n");
    // Our settings win.
    node.set_env("LAVA_MULTINODE_CLIENT", Some("vm1"));
    node.set_env("LAVA_MULTINODE_ROLE", Some("guest"));
    assert_eq!(node.run("lava-self", &[]).ok(), "vm1\n");
    assert_eq!(node.run("lava-role", &[]).ok(), "guest\n");

    // Nothing provides them: every place is named.
    let bare = console_node(&tools, 5.0);
    let run = bare.run("lava-self", &[]);
    let line = run.fails(CONFIG);
    assert!(
        line.contains("$LAVA_MULTINODE_CLIENT") && line.contains("$LAVA_HOSTNAME"),
        "{line}"
    );
    assert!(bare
        .run("lava-role", &[])
        .fails(CONFIG)
        .contains("$TARGET_ROLE"));
    assert!(bare
        .run("lava-group", &[])
        .fails(CONFIG)
        .contains("$LAVA_GROUP"));
    assert!(bare
        .run("lava-role", &["list"])
        .fails(CONFIG)
        .contains("$LAVA_GROUP"));
}

/// The VM commands over the console: LAVA's message ids.
#[test]
fn console_transport_vm_commands() {
    let tools = Tools::native();
    let mut node = console_node(&tools, 5.0);

    // No coordinator to find the host's address towards: it must be set.
    let run = node.run("lava-start-vms", &[]);
    assert!(run.fails(CONFIG).contains("--host-ip"), "{}", run.stderr);
    assert_eq!(
        node.run("lava-start-vms", &["--host-ip", "10.0.2.2"]).ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_start host_ip=10.0.2.2>\n"
    );
    node.set_env("LAVA_MULTINODE_HOST_IP", Some("192.0.2.7"));
    assert_eq!(
        node.run("lava-start-vms", &[]).ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_start host_ip=192.0.2.7>\n"
    );

    assert_eq!(
        node.run("lava-vm-done", &[]).ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop status=ok>\n"
    );
    // A reason keeps single spaces; what a marker cannot carry becomes '_', with a note.
    let run = node.run("lava-vm-done", &["--failed", "disk  full: x=1"]);
    assert_eq!(
        run.ok(),
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop status=failed reason=disk full: x_1>\n"
    );
    assert!(run.stderr.contains("\"disk full: x_1\""), "{}", run.stderr);

    // lava-wait-for-vms: reports the host's end, waits for every member's.
    let mut wait = node.console("lava-wait-for-vms", &[]);
    assert_eq!(
        wait.read_line(),
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop status=ok>"
    );
    assert_eq!(
        wait.read_line(),
        "<LAVA_MULTI_NODE> <LAVA_WAIT_ALL lava_vm_stop>"
    );
    wait.type_text("<LAVA_WAIT_ALL_COMPLETE host:status=ok vm1:status=ok vm2:status=ok>\n\n");
    wait.finish().ok();

    let mut wait = node.console("lava-wait-vms", &[]);
    wait.read_line();
    wait.read_line();
    wait.type_text(
        "<LAVA_WAIT_ALL_COMPLETE host:status=ok vm1:status=failed vm1:reason=disk full \
         vm2:status=ok>\n\n",
    );
    let run = wait.finish();
    let line = run.fails(NEGATIVE);
    assert_eq!(
        line,
        "lava-wait-vms: 1 of 3 member(s) of the VM group failed: vm1 (disk full)"
    );
}
