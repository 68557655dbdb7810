//! VM groups end to end: `lava-multinode vm-group run` as the host, our coordinator on
//! loopback, and guests that are either real qemu VMs (the test guest of
//! `packaging/vm-guest/build.sh`) or shell scripts that play a guest with the tools.
//!
//! The qemu tests skip with a notice when qemu or the guest is missing, and fail instead with
//! `LAVA_MULTINODE_REQUIRE_VM=1` (as `.ci/run` sets).

use std::path::PathBuf;
use std::time::Duration;

use lava_multinode_tests::browser::Browser;
use lava_multinode_tests::vm::{self, job, qemu_vm, script_vm, Launcher};
use lava_multinode_tests::{start_coordinator, workspace_root, Server, TempDir};
use serde_json::json;

/// Longest a process-only run may take.
const QUICK: Duration = Duration::from_secs(40);
/// Longest a qemu run may take before the test gives up (the budget asserted is 30 s).
const SLOW: Duration = Duration::from_secs(120);

fn coordinator() -> Server {
    start_coordinator(&["--state", ":memory:"])
}

/// A launcher whose process guests reach the coordinator on loopback directly.
fn process_launcher(server: &Server, tag: &str) -> Launcher {
    let mut l = Launcher::new(&server.addr, tag);
    l.guest_coordinator = Some(server.addr.clone());
    l.boot_timeout = 20.0;
    l.timeout = 30.0;
    l
}

/// Writes a guest script into `dir`.
fn script(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A guest that waits for the gate, reports in with the host_ip it received and its
/// identity, waits for the host's token, syncs with everybody and reports its end.
const GOOD_GUEST: &str = r#"set -e
echo "fake guest $(lava-self) booting"
echo "guest# "
lava-wait lava_vm_start >/dev/null
host_ip=$(sed -n 's/^[^:]*:host_ip=//p' "$LAVA_MULTI_NODE_CACHE")
lava-send guest-ready client="$(lava-self)" role="$(lava-role)" host_ip="$host_ip"
lava-wait host-token
lava-sync all-done
lava-vm-done
echo "fake guest done"
"#;

const HOST_TEST: &str = r#"set -e
lava-wait-all guest-ready server >/dev/null
lava-wait-all guest-ready client >"$LAVA_VM_GROUP_LOG_DIR/ready.txt"
lava-send host-token token=t42
lava-sync all-done
echo "host test done"
"#;

#[test]
fn process_guests_exchange_data_and_finish() {
    let server = coordinator();
    let mut l = process_launcher(&server, "ok");
    let g = script(&l.dir, "guest.sh", GOOD_GUEST);
    l.after = vec!["lava-wait-all lava_vm_stop >\"$LAVA_VM_GROUP_LOG_DIR/after.txt\"".into()];
    let job = job(
        None,
        vec![
            script_vm("server", 1, &g, Some("guest# ")),
            script_vm("client", 2, &g, Some("guest# ")),
        ],
    );
    let run = l.run(&job, &["sh", "-c", HOST_TEST], QUICK);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("host test done"), "{}", run.text());
    // Every guest got the host's address with the gate, and its identity from the
    // kernel command line the launcher made.
    let ready = std::fs::read_to_string(l.log_dir().join("ready.txt")).unwrap();
    for client in ["server-1", "client-1", "client-2"] {
        assert!(
            ready.contains(&format!("{client}:host_ip=10.0.2.2")),
            "{ready}"
        );
        assert!(
            ready.contains(&format!("{client}:client={client}")),
            "{ready}"
        );
        let console = l.console(client);
        assert!(console.contains("host:token=t42"), "{client}: {console}");
        assert!(console.contains("fake guest done"), "{client}: {console}");
    }
    assert!(ready.contains("client-2:role=client"), "{ready}");
    // The after step ran once every VM had ended, while the group still existed.
    let after = std::fs::read_to_string(l.log_dir().join("after.txt")).unwrap();
    for member in ["host", "server-1", "client-1", "client-2"] {
        assert!(after.contains(&format!("{member}:status=ok")), "{after}");
    }
    let after_line = run.line_of("after step:");
    for client in ["server-1", "client-1", "client-2"] {
        assert!(run.line_of(&format!("{client}: process ended")) < after_line);
        assert!(run.line_of(&format!("{client}: booted")) < after_line);
    }
    assert!(run.stderr.contains("VM group passed"), "{}", run.text());
}

/// The run's `report.html` opens in headless chromium from the file alone: the nodes with
/// their boot and run times, and the group's timeline from our coordinator's history (a
/// lane per member, the sync that ended the run).
#[test]
fn report_html_opens_offline_in_a_browser() {
    let Some(browser) = Browser::start_or_skip("report_html_opens_offline_in_a_browser") else {
        return;
    };
    let server = coordinator();
    let l = process_launcher(&server, "report");
    let g = script(&l.dir, "guest.sh", GOOD_GUEST);
    let job = job(
        None,
        vec![
            script_vm("server", 1, &g, Some("guest# ")),
            script_vm("client", 2, &g, Some("guest# ")),
        ],
    );
    let run = l.run(&job, &["sh", "-c", HOST_TEST], QUICK);
    assert_eq!(run.code, 0, "{}", run.text());
    let report = l.log_dir().join("report.html");
    assert!(run.stderr.contains("report: "), "{}", run.text());
    browser.goto(&format!("file://{}", report.display()));
    let nodes = browser.run(
        "return Array.from(document.querySelectorAll('#nodes tbody tr'))\
         .map(r => [r.cells[0].textContent, r.cells[2].textContent, r.cells[4].textContent]);",
    );
    let nodes = nodes.as_array().expect("the nodes table").clone();
    let names: Vec<&str> = nodes.iter().map(|n| n[0].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["server-1", "client-1", "client-2"], "{nodes:?}");
    for n in &nodes {
        assert_eq!(n[1], "ok", "{nodes:?}");
        assert!(
            n[2].as_str().unwrap_or("").ends_with('s'),
            "run time: {nodes:?}"
        );
    }
    let lanes = browser.run(
        "return Array.from(document.querySelectorAll('#timeline .lane-row'))\
         .map(g => g.getAttribute('data-lane'));",
    );
    for client in ["server-1", "client-1", "client-2"] {
        assert!(
            lanes.as_array().unwrap().iter().any(|l| l == client),
            "{client} has a lane: {lanes}"
        );
    }
    assert_eq!(
        browser.run(
            "return document.querySelectorAll('#timeline line.sync title')[0].textContent.indexOf('all-done') >= 0;"
        ),
        json!(true),
        "the sync all-done is drawn"
    );
    assert_eq!(
        browser.run("return performance.getEntriesByType('resource').length;"),
        json!(0),
        "nothing fetched beside the file"
    );
    assert!(browser
        .run("return document.body.textContent;")
        .as_str()
        .unwrap_or_default()
        .contains("From the coordinator's history"));
    browser.screenshot(
        &lava_multinode_tests::profile_dir()
            .join("web")
            .join("report.png"),
    );
}

#[test]
fn dead_process_guest_is_reported_failed_and_the_host_does_not_hang() {
    let server = coordinator();
    let l = process_launcher(&server, "dead");
    let dead = script(
        &l.dir,
        "dead.sh",
        "echo 'guest# '\nlava-wait lava_vm_start >/dev/null\necho dying\nexit 0\n",
    );
    // The good guest only reports its end.
    let done = script(
        &l.dir,
        "done.sh",
        "echo 'guest# '\nlava-wait lava_vm_start >/dev/null\nlava-vm-done\n",
    );
    let job = job(
        Some(false),
        vec![
            script_vm("server", 1, &dead, Some("guest# ")),
            script_vm("client", 1, &done, Some("guest# ")),
        ],
    );
    // The seed's manual flow: the host test opens the gate and waits for the VMs itself
    // (with the seed's other name, lava-wait-vms).
    let host = r#"lava-start-vms
lava-wait-vms 2>"$LAVA_VM_GROUP_LOG_DIR/wait.err"
echo "wait-for-vms=$?" >"$LAVA_VM_GROUP_LOG_DIR/wait.rc"
"#;
    let run = l.run(&job, &["sh", "-c", host], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    let rc = std::fs::read_to_string(l.log_dir().join("wait.rc")).unwrap();
    assert_eq!(rc.trim(), "wait-for-vms=1", "{}", run.text());
    let err = std::fs::read_to_string(l.log_dir().join("wait.err")).unwrap();
    assert!(
        err.contains(
            "server-1 (VM process ended (exit status 0) without the guest reporting its end"
        ),
        "{err}"
    );
    assert!(!err.contains("client-1"), "{err}");
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.text());
    assert!(
        run.stderr.contains("client-1 (client): ok"),
        "{}",
        run.text()
    );
}

#[test]
fn boot_timeout_kills_the_vm_and_reports_it() {
    let server = coordinator();
    let mut l = process_launcher(&server, "boot");
    l.boot_timeout = 1.0;
    let hang = script(&l.dir, "hang.sh", "echo 'no prompt here'\nexec sleep 60\n");
    let done = script(
        &l.dir,
        "done.sh",
        "echo 'guest# '\nlava-wait lava_vm_start >/dev/null\nlava-vm-done\n",
    );
    let job = job(
        None,
        vec![
            script_vm("server", 1, &hang, Some("guest# ")),
            script_vm("client", 1, &done, Some("guest# ")),
        ],
    );
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stderr
            .contains("server-1 (no shell prompt \"guest# \" within 1 s (boot timeout); last console line: no prompt here"),
        "{}",
        run.text()
    );
    assert!(run.elapsed < Duration::from_secs(10), "{}", run.text());
    assert!(l.console("server-1").contains("no prompt here"));
}

#[test]
fn vms_never_started_when_the_host_test_does_not_open_the_gate() {
    let server = coordinator();
    let l = process_launcher(&server, "gate");
    let done = script(&l.dir, "done.sh", "lava-wait lava_vm_start\nlava-vm-done\n");
    let job = job(Some(false), vec![script_vm("guest", 1, &done, None)]);
    let run = l.run(&job, &["true"], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stderr
            .contains("never started: the host test ended without calling lava-start-vms"),
        "{}",
        run.text()
    );
    assert!(
        !l.log_dir().join("guest-1.log").exists(),
        "the VM was launched"
    );
    // No host test at all: nothing could open the gate.
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 2, "{}", run.text());
}

#[test]
fn host_test_failure_fails_the_run_and_stops_the_vms_soon() {
    let server = coordinator();
    let l = process_launcher(&server, "hostfail");
    let g = script(&l.dir, "guest.sh", GOOD_GUEST);
    let job = job(None, vec![script_vm("server", 1, &g, Some("guest# "))]);
    let run = l.run(&job, &["sh", "-c", "exit 3"], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stderr.contains("host test ended with exit status 3"),
        "{}",
        run.text()
    );
    // The guest waits for a token that never comes: killed after the grace.
    assert!(run.elapsed < Duration::from_secs(25), "{}", run.text());
}

#[test]
fn failing_setup_command_fails_the_vm() {
    let server = coordinator();
    let l = process_launcher(&server, "setup");
    let vm = json!({"device_type": "kvm", "role": "guest",
        "launch_with": ["echo preparing; exit 7", "echo never"]});
    let run = l.run(&job(None, vec![vm]), &[], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.stderr
            .contains("launch_with[0] ended with exit status 7"),
        "{}",
        run.text()
    );
    assert!(l.console("guest-1").contains("preparing"));
}

#[test]
fn invalid_definitions_name_the_field() {
    let server = coordinator();
    let l = process_launcher(&server, "bad");
    let bad_count = json!({"vm_group": {"host": {"device_type": "x", "role": "host"},
        "vms": [{"device_type": "kvm", "role": "guest", "count": 0, "launch_with": ["true"]}]}});
    let out = l.command("run", &bad_count, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vm_group.vms[0].count"), "{err}");
    let bad_placeholder = job(
        None,
        vec![json!({"device_type": "kvm", "role": "guest", "launch_with": ["qemu {imgae}"]})],
    );
    let out = l.command("run", &bad_placeholder, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vm_group.vms[0].launch_with[0]: unknown placeholder {imgae}"),
        "{err}"
    );
    let no_image = job(
        None,
        vec![json!({"device_type": "kvm", "role": "guest", "launch_with": ["qemu {image}"]})],
    );
    let out = l.command("run", &no_image, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("{image} has no value"));
}

#[test]
fn show_prints_the_derived_group() {
    let server = coordinator();
    let l = Launcher::new(&server.addr, "show");
    let out = l
        .command(
            "show",
            &serde_json::from_str(
                &std::fs::read_to_string(workspace_root().join("packaging/vm-guest/demo/job.json"))
                    .unwrap(),
            )
            .unwrap(),
            &[],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("group_size\t3\n"), "{text}");
    assert!(text.contains("node\thost\thost\thost\tx86_64\n"), "{text}");
    assert!(
        text.contains("node\tserver-1\tserver\tvm\tqemu\n"),
        "{text}"
    );
    assert!(
        text.contains("node\tclient-1\tclient\tvm\tqemu\n"),
        "{text}"
    );
    let port = server.addr.rsplit(':').next().unwrap();
    assert!(
        text.contains(&format!(
            "lava_multinode.coordinator=10.0.2.2:{port} lava_multinode.group={} \
             lava_multinode.client=client-1 lava_multinode.role=client lava_multinode.group_size=3",
            l.group
        )),
        "{text}"
    );
}

// --- real qemu guests ---------------------------------------------------------------------

/// The demo's host side: checks host_ip, token exchange, sync.
fn demo_host(args: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["sh", "packaging/vm-guest/demo/host-test.sh"];
    v.extend_from_slice(args);
    v
}

fn qemu_demo(auto_start: bool) {
    let name = format!("qemu_demo(auto_start_vms={auto_start})");
    let Some(guest) = vm::guest_or_skip(&name) else {
        return;
    };
    let _lock = vm::qemu_lock();
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, if auto_start { "qauto" } else { "qmanual" });
    l.after = vec![
        "lava-wait-all lava_vm_stop >\"$LAVA_VM_GROUP_LOG_DIR/after.txt\"; echo after step ran"
            .into(),
    ];
    let job = job(
        Some(auto_start),
        vec![
            qemu_vm(&guest, "server", "demo"),
            qemu_vm(&guest, "client", "demo"),
        ],
    );
    let host = if auto_start {
        demo_host(&[])
    } else {
        demo_host(&["--start-vms", "--wait-for-vms"])
    };
    let run = l.run(&job, &host, SLOW);
    println!(
        "{name}: the VM group run (2 qemu guests) took {:.1} s",
        run.elapsed.as_secs_f64()
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("host: demo passed"), "{}", run.text());
    assert!(run.stdout.contains("after step ran"), "{}", run.text());
    if !auto_start {
        assert!(
            run.stdout.contains("host: lava-wait-for-vms returned 0"),
            "{}",
            run.text()
        );
        assert!(run.stderr.contains("start gate opened by the host test"));
    }
    for client in ["server-1", "client-1"] {
        let console = l.console(client);
        assert!(console.contains(vm::GUEST_PROMPT), "{client}: {console}");
        assert!(
            console.contains("host_ip=10.0.2.2"),
            "{client} did not receive host_ip: {console}"
        );
        assert!(console.contains("demo: synced"), "{client}: {console}");
        assert!(console.contains("Power down"), "{client}: {console}");
    }
    let after = std::fs::read_to_string(l.log_dir().join("after.txt")).unwrap();
    for member in ["host", "server-1", "client-1"] {
        assert!(after.contains(&format!("{member}:status=ok")), "{after}");
    }
    let after_line = run.line_of("after step:");
    for client in ["server-1", "client-1"] {
        assert!(run.line_of(&format!("{client}: process ended")) < after_line);
    }
    assert!(
        run.elapsed < Duration::from_secs(30),
        "the VM group run took {:.1} s (budget 30 s)\n{}",
        run.elapsed.as_secs_f64(),
        run.text()
    );
}

#[test]
fn qemu_guests_auto_start() {
    qemu_demo(true);
}

#[test]
fn qemu_guests_started_by_the_host_test() {
    qemu_demo(false);
}

#[test]
fn qemu_guest_powering_off_without_finishing_fails_the_host_fast() {
    let Some(guest) = vm::guest_or_skip("qemu_guest_powering_off_without_finishing") else {
        return;
    };
    let _lock = vm::qemu_lock();
    let server = coordinator();
    let l = Launcher::new(&server.addr, "qcrash");
    let job = job(
        Some(false),
        vec![
            qemu_vm(&guest, "server", "crash"),
            qemu_vm(&guest, "client", "done"),
        ],
    );
    let host = r#"lava-start-vms
start=$(date +%s%N)
lava-wait-for-vms 2>"$LAVA_VM_GROUP_LOG_DIR/wait.err"
rc=$?
echo "wait-for-vms=$rc ms=$(( ($(date +%s%N) - start) / 1000000 ))" >"$LAVA_VM_GROUP_LOG_DIR/wait.rc"
exit $rc
"#;
    let run = l.run(&job, &["sh", "-c", host], SLOW);
    println!(
        "qemu crash case: the launcher ended after {:.1} s",
        run.elapsed.as_secs_f64()
    );
    assert_eq!(run.code, 1, "{}", run.text());
    let rc = std::fs::read_to_string(l.log_dir().join("wait.rc")).unwrap();
    assert!(rc.starts_with("wait-for-vms=1 "), "{rc}\n{}", run.text());
    let err = std::fs::read_to_string(l.log_dir().join("wait.err")).unwrap();
    assert!(
        err.contains(
            "server-1 (VM process ended (exit status 0) without the guest reporting its end"
        ),
        "{err}"
    );
    assert!(!err.contains("client-1"), "{err}");
    assert!(l
        .console("server-1")
        .contains("crash: powering off without lava-vm-done"));
    // Fails fast: within seconds of the guests' boot, nowhere near any timeout (60 s).
    assert!(run.elapsed < Duration::from_secs(30), "{}", run.text());
}

// --- qemu guests without a network device: the MultiNode API over their consoles -------------

/// The host's side of the console tests (over TCP, as every host test): opens the gate, sends
/// each role its data, collects the guests' answers, syncs with both, and waits for their ends
/// with `lava-wait-for-vms`, whose exit status it records.
const CONSOLE_HOST: &str = r#"set -e
D=$LAVA_VM_GROUP_LOG_DIR
lava-start-vms
lava-send host-data token=console-t42 server_data=for-server client_data=for-client
lava-wait-all guest-data server >"$D/server.txt"
lava-wait-all guest-data client >"$D/client.txt"
lava-sync console-done
rc=0
lava-wait-for-vms 2>"$D/wait.err" || rc=$?
echo "wait-for-vms=$rc" >"$D/wait.rc"
echo "console host done"
exit $rc
"#;

/// Whether a line of `console` holds every one of `needles` (a marker's pairs may come in
/// any order).
fn has_line(console: &str, needles: &[&str]) -> bool {
    console
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

/// Two qemu guests with no network device (`server`, `client`) running guest test `test`,
/// which takes part through the console only; the host test over TCP. Checks what each side
/// received: the host the guests' data, the guests the host's (a guest test exits non-zero on
/// a mismatch, which fails its VM and the host's `lava-wait-for-vms`).
///
/// `mode`: the guest's `lava_multinode.console=`: `test` runs the guest test itself; with
/// `shell` (a shell prompt) and `login` (a login, which the launcher's `auto_login` answers)
/// the launcher types `sh -e /tests/TEST.sh` then `exit` at the prompt.
fn qemu_console_group(test: &str, tag: &str, mode: &str) -> Option<(Launcher, vm::LauncherRun)> {
    let name = format!("qemu console guests ({test}, console={mode})");
    let login = mode == "login";
    let guest = vm::guest_or_skip(&name)?;
    let _lock = vm::qemu_lock();
    let server = coordinator();
    let l = Launcher::new(&server.addr, tag);
    let command = format!("sh -e /tests/{test}.sh");
    let vm = |role| {
        let commands = [command.as_str(), "exit"];
        match mode {
            "login" => vm::qemu_login_vm(&guest, role, &commands),
            "shell" => vm::qemu_shell_vm(&guest, role, &commands),
            _ => vm::qemu_console_vm(&guest, role, test),
        }
    };
    let job = job(Some(false), vec![vm("server"), vm("client")]);
    let run = l.run(&job, &["sh", "-c", CONSOLE_HOST], SLOW);
    println!(
        "{name}: the VM group run (2 qemu guests, consoles only) took {:.1} s",
        run.elapsed.as_secs_f64()
    );
    let consoles = format!(
        "--- server-1.log\n{}\n--- client-1.log\n{}",
        l.console("server-1"),
        l.console("client-1")
    );
    assert_eq!(run.code, 0, "{}\n{consoles}", run.text());
    assert!(run.stdout.contains("console host done"), "{}", run.text());
    let rc = std::fs::read_to_string(l.log_dir().join("wait.rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "wait-for-vms=0", "{}\n{consoles}", run.text());
    // The host got each guest's data, sent from its console.
    for (role, client) in [("server", "server-1"), ("client", "client-1")] {
        let got = std::fs::read_to_string(l.log_dir().join(format!("{role}.txt"))).unwrap();
        for pair in [
            format!("{client}:client={client}"),
            format!("{client}:role={role}"),
            format!("{client}:echo=console-t42"),
            format!("{client}:via={test}"),
        ] {
            assert!(got.contains(&pair), "{role}.txt lacks {pair}: {got}");
        }
    }
    for client in ["server-1", "client-1"] {
        let console = l.console(client);
        // No network device, so no network: everything went through the console, as LAVA's
        // markers and the replies typed back (echoed by the guest's tty).
        assert!(
            console.contains("lava-guest: no network"),
            "{client}: {console}"
        );
        assert!(!console.contains("eth0"), "{client}: {console}");
        assert!(
            console.contains("<LAVA_MULTI_NODE> <LAVA_WAIT host-data>"),
            "{client}: {console}"
        );
        assert!(
            has_line(
                &console,
                &["<LAVA_WAIT_COMPLETE ", " host:token=console-t42"]
            ),
            "{client}: {console}"
        );
        assert!(
            console.contains("<LAVA_MULTI_NODE> <LAVA_SYNC console-done>"),
            "{client}: {console}"
        );
        assert!(
            console.contains("<LAVA_SYNC_COMPLETE"),
            "{client}: {console}"
        );
        assert!(
            has_line(
                &console,
                &[
                    "<LAVA_MULTI_NODE> <LAVA_SEND guest-data ",
                    &format!(" client={client}")
                ]
            ),
            "{client}: {console}"
        );
        if mode != "test" {
            assert!(
                run.stderr
                    .contains(&format!("{client}: console_commands[0] passed")),
                "{}",
                run.text()
            );
            assert!(
                console.contains(&format!("lava-guest: console {mode} ended")),
                "{client}: {console}"
            );
        }
        if login {
            assert!(
                console.contains(&format!("{client} login: ")),
                "{client}: {console}"
            );
            // Neither the launcher's log of what it typed nor the tty's echo shows it.
            assert!(
                !console.lines().any(|l| l
                    .trim_end()
                    .ends_with(&format!(" {}", vm::GUEST_PASSWORD))
                    || l.trim() == vm::GUEST_PASSWORD),
                "{client}: the password was logged: {console}"
            );
        } else if mode == "test" {
            assert!(
                console.contains(&format!("lava-guest: test {test} exited 0")),
                "{client}: {console}"
            );
        }
        assert!(console.contains("Power down"), "{client}: {console}");
    }
    for member in ["server-1 (server): ok", "client-1 (client): ok"] {
        assert!(run.stderr.contains(member), "{}", run.text());
    }
    assert!(
        run.elapsed < Duration::from_secs(45),
        "the VM group run took {:.1} s (budget 45 s)\n{}",
        run.elapsed.as_secs_f64(),
        run.text()
    );
    Some((l, run))
}

#[test]
fn qemu_console_guests_with_our_tools() {
    let Some((l, _)) = qemu_console_group("console-tools", "qcons", "test") else {
        return;
    };
    for client in ["server-1", "client-1"] {
        let console = l.console(client);
        // lava-vm-done over the console is LAVA's send of lava_vm_stop.
        assert!(
            has_line(
                &console,
                &["<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop ", " status=ok"]
            ),
            "{client}: {console}"
        );
    }
}

#[test]
fn qemu_console_guests_with_lava_helpers() {
    let Some((l, _)) = qemu_console_group("console-lava", "qlava", "test") else {
        return;
    };
    for client in ["server-1", "client-1"] {
        let console = l.console(client);
        assert!(
            console.contains("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=console-lava RESULT=pass>"),
            "{client}: {console}"
        );
        assert!(
            console.contains("<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop status=ok>"),
            "{client}: {console}"
        );
    }
}

/// The guests' login mode (`lava_multinode.console=login`): the launcher logs in as root
/// (`auto_login`) and types the test of LAVA's helpers at the prompt.
#[test]
fn qemu_console_guests_logged_in_by_the_launcher() {
    let Some((l, _)) = qemu_console_group("console-lava", "qlogin", "login") else {
        return;
    };
    for client in ["server-1", "client-1"] {
        let console = l.console(client);
        assert!(
            console.contains("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=console-lava RESULT=pass>"),
            "{client}: {console}"
        );
    }
}

/// The guests' shell mode (`lava_multinode.console=shell`): the launcher types the test of our
/// tools (console transport) at the shell prompt.
#[test]
fn qemu_console_guests_with_our_tools_typed_at_the_shell() {
    qemu_console_group("console-tools", "qshell", "shell");
}

#[test]
fn qemu_console_guest_with_a_garbled_marker_fails_without_hanging() {
    let Some(guest) = vm::guest_or_skip("qemu_console_guest_with_a_garbled_marker") else {
        return;
    };
    let _lock = vm::qemu_lock();
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "qgarbled");
    l.timeout = 40.0;
    // Once every VM has ended: did the good marker after the garbage reach the coordinator?
    l.after = vec![
        "lava-wait --timeout 5 garbled-after >\"$LAVA_VM_GROUP_LOG_DIR/after.txt\"; \
         echo \"after-wait=$?\" >>\"$LAVA_VM_GROUP_LOG_DIR/after.txt\""
            .into(),
    ];
    let job = job(
        Some(true),
        vec![
            vm::qemu_console_vm(&guest, "server", "console-garbled"),
            vm::qemu_console_vm(&guest, "client", "done"),
        ],
    );
    let run = l.run(&job, &[], SLOW);
    println!(
        "qemu garbled marker: the launcher ended after {:.1} s",
        run.elapsed.as_secs_f64()
    );
    let console = l.console("server-1");
    // A clear failure, not a timeout (exit 5) nor a hang.
    assert_eq!(run.code, 1, "{}\n--- server-1.log\n{console}", run.text());
    assert!(
        run.elapsed < Duration::from_secs_f64(l.timeout),
        "{}",
        run.text()
    );
    assert!(
        console.contains("<LAVA_MULTI_NODE> <LAVA_WAIT garbled-id"),
        "{console}"
    );
    let summary = run
        .stderr
        .lines()
        .find(|line| line.contains("server-1 (server): "))
        .unwrap_or_else(|| panic!("no summary line of server-1:\n{}", run.text()));
    assert!(summary.contains("failed"), "{summary}\n{}", run.text());
    assert!(
        run.stderr.contains("client-1 (client): ok"),
        "{}",
        run.text()
    );
    // The launcher said what it saw, and kept relaying after the garbage.
    assert!(
        has_line(&run.stderr, &["server-1", "garbled"]),
        "{}",
        run.text()
    );
    let after = std::fs::read_to_string(l.log_dir().join("after.txt")).unwrap_or_default();
    assert!(
        after.contains("server-1:relayed=yes"),
        "the good marker after the garbled ones was not relayed: {after}\n{}\n--- server-1.log\n{console}",
        run.text()
    );
}

/// The console guests check what they receive: a wrong token from the host makes both guest
/// tests (ours and LAVA's helpers, one of each) exit non-zero, which reports both VMs failed,
/// and the host's `lava-wait-for-vms` says so.
#[test]
fn qemu_console_guests_reject_wrong_host_data() {
    let Some(guest) = vm::guest_or_skip("qemu_console_guests_reject_wrong_host_data") else {
        return;
    };
    let _lock = vm::qemu_lock();
    let server = coordinator();
    let l = Launcher::new(&server.addr, "qwrong");
    let job = job(
        Some(false),
        vec![
            vm::qemu_console_vm(&guest, "server", "console-tools"),
            vm::qemu_console_vm(&guest, "client", "console-lava"),
        ],
    );
    let host = r#"lava-start-vms
lava-send host-data token=wrong server_data=for-server client_data=for-client
lava-wait-for-vms 2>"$LAVA_VM_GROUP_LOG_DIR/wait.err"
echo "wait-for-vms=$?" >"$LAVA_VM_GROUP_LOG_DIR/wait.rc"
"#;
    let run = l.run(&job, &["sh", "-c", host], SLOW);
    assert_eq!(run.code, 1, "{}", run.text());
    let rc = std::fs::read_to_string(l.log_dir().join("wait.rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "wait-for-vms=1", "{}", run.text());
    let err = std::fs::read_to_string(l.log_dir().join("wait.err")).unwrap_or_default();
    for (client, test) in [("server-1", "console-tools"), ("client-1", "console-lava")] {
        assert!(
            err.contains(&format!("{client} (guest test {test} exited 3")),
            "{err}\n{}",
            run.text()
        );
        let console = l.console(client);
        assert!(console.contains(": bad token"), "{client}: {console}");
    }
    assert!(run.elapsed < Duration::from_secs(45), "{}", run.text());
}
