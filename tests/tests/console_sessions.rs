//! The launcher's console sessions and its relay of LAVA's MultiNode API, with shell scripts
//! playing the guests on the launcher's pseudo-terminal: a login dialogue, then an
//! interactive shell whose `console_commands` call LAVA's own shell helpers (copied from
//! Debian's lava-dispatcher package), which print markers and read the replies the
//! launcher types. No guest here reaches the coordinator by TCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lava_multinode_tests::vm::{job, Launcher};
use lava_multinode_tests::{start_coordinator, Server, TempDir};
use serde_json::{json, Value};

const QUICK: Duration = Duration::from_secs(60);

/// Where tests/interop/install.sh extracts Debian's lava-dispatcher.
const LAVA_HELPERS: &str =
    "/opt/lava-dispatcher-client/usr/lib/python3/dist-packages/lava_dispatcher/lava_test_shell";

fn coordinator() -> Server {
    start_coordinator(&["--state", ":memory:"])
}

/// LAVA's shell helpers, copied into `dir/lava-test-bin` (multi_node/ and lava-test-case).
fn lava_helpers(dir: &TempDir) -> PathBuf {
    let src = Path::new(LAVA_HELPERS);
    assert!(
        src.join("multi_node/lava-sync").exists(),
        "LAVA's shell helpers are missing ({}): run `bash tests/interop/install.sh` as root",
        src.display()
    );
    let bin = dir.path().join("lava-test-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir(src.join("multi_node")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bin.join(entry.file_name())).unwrap();
    }
    std::fs::copy(src.join("lava-test-case"), bin.join("lava-test-case")).unwrap();
    // The package ships them 0644: LAVA makes them executable in its overlay.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(&bin).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// A guest on the console: optionally a login dialogue (`login: `, `Password: `, checked),
/// then an interactive shell with prompt `guest# ` and LAVA's helpers on its PATH. Nothing
/// tells it where the coordinator is.
fn guest_script(dir: &TempDir, helpers: &Path, login: bool) -> PathBuf {
    let login_part = if login {
        r#"printf 'guest login: '
read user
printf 'Password: '
read password
[ "$user" = root ] && [ "$password" = s3cret ] || { echo "Login incorrect"; exit 1; }
echo "Welcome"
"#
    } else {
        ""
    };
    let text = format!(
        "echo 'fake guest booting'\n{login_part}\
         export LAVA_TEST_BIN={bin} PATH={bin}:$PATH\n\
         export LAVA_MULTI_NODE_CACHE=\"$LOG_DIR/$CLIENT.cache\"\n\
         PS1='guest# ' exec sh -i\n",
        bin = helpers.display()
    );
    let path = dir
        .path()
        .join(if login { "login-guest.sh" } else { "guest.sh" });
    std::fs::write(&path, text).unwrap();
    path
}

fn console_vm(role: &str, script: &Path, login: bool, commands: &[&str]) -> Value {
    let mut vm = json!({
        "device_type": "process",
        "role": role,
        "shell_prompt": "guest# ",
        "launch_with": [format!(
            "LOG_DIR={{log_dir}} CLIENT={{client}} exec sh {}",
            script.display()
        )],
        "console_commands": commands,
    });
    if login {
        vm["auto_login"] = json!({
            "login_prompt": "login: ",
            "username": "root",
            "password_prompt": "Password: ",
            "password": "s3cret",
        });
    }
    vm
}

fn host_script(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("host.sh");
    std::fs::write(&path, format!("set -e\n{text}")).unwrap();
    path.display().to_string()
}

/// Two guests that reach the coordinator only through their consoles, one after a login:
/// send with data, wait, wait-all by role, sync with the host, each checked in the guest.
#[test]
fn guests_use_lavas_helpers_over_the_console_only() {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "console");
    l.boot_timeout = 20.0;
    l.timeout = 30.0;
    // Guests that tried TCP would find nothing here.
    l.guest_coordinator = Some("127.0.0.1:9".into());
    let helpers = lava_helpers(&l.dir);
    let server_commands = [
        "lava-send ready ip=10.0.0.7 port=8080",
        "lava-wait token",
        "grep -qx 'host:value=t42' \"$LAVA_MULTI_NODE_CACHE\"",
        "lava-sync all-here",
    ];
    let client_commands = [
        "lava-wait-all ready server",
        // LAVA's helper splits the reply into lines only before numeric sender names.
        "grep -q 'server-1:ip=10.0.0.7 server-1:port=8080' \"$LAVA_MULTI_NODE_CACHE\"",
        "lava-sync all-here",
    ];
    let login_guest = guest_script(&l.dir, &helpers, true);
    let plain_guest = guest_script(&l.dir, &helpers, false);
    let job = job(
        None,
        vec![
            console_vm("server", &login_guest, true, &server_commands),
            console_vm("client", &plain_guest, false, &client_commands),
        ],
    );
    let host = host_script(
        &l.dir,
        "lava-wait-all ready server >/dev/null\nlava-send token value=t42\nlava-sync all-here\n",
    );
    let run = l.run(&job, &["sh", &host], QUICK);
    assert_eq!(run.code, 0, "{}", run.text());
    for needle in [
        "server-1: logged in",
        "server-1: relayed <LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.0.7 port=8080>",
        "client-1: relayed <LAVA_MULTI_NODE> <LAVA_WAIT_ALL ready server>",
        "server-1: console_commands[3] passed",
        "client-1: its steps have ended: reporting its end and powering it off",
        "server-1 (server): ok",
        "client-1 (client): ok",
    ] {
        run.line_of(needle);
    }
    let server_log = l.console("server-1");
    assert!(
        server_log.contains("[vm-group typed] <LAVA_SYNC_COMPLETE>"),
        "{server_log}"
    );
    assert!(
        server_log.contains("[vm-group typed] ********") && !server_log.contains("s3cret"),
        "the password is typed, not logged: {server_log}"
    );
    assert!(l.console("client-1").contains(
        "[vm-group typed] <LAVA_WAIT_ALL_COMPLETE server-1:ip=10.0.0.7 server-1:port=8080>"
    ));
}

/// A garbled marker is reported and does not hang anything; a failing command fails its VM
/// at once (reported in its name), and the run fails naming it.
#[test]
fn garbled_markers_and_failing_commands_fail_the_vm_without_hanging() {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "garbled");
    l.boot_timeout = 20.0;
    l.timeout = 30.0;
    let helpers = lava_helpers(&l.dir);
    let guest = guest_script(&l.dir, &helpers, false);
    let job = job(
        None,
        vec![console_vm(
            "server",
            &guest,
            false,
            &[
                "printf '<LAVA_MULTI_NODE> <LAVA_WAIT x\\n'",
                "false",
                "echo never",
            ],
        )],
    );
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    run.line_of("server-1: garbled MultiNode marker on the console");
    run.line_of("server-1: console_commands[1] ended with status 1: false");
    assert!(
        !run.stderr.contains("console_commands[2]"),
        "{}",
        run.text()
    );
    run.line_of("server-1 (server): failed");
    assert!(run.elapsed < Duration::from_secs(20), "{}", run.text());
}

/// A login prompt that never comes ends the VM at the boot timeout, naming what it waited for.
#[test]
fn a_missing_login_prompt_is_a_boot_timeout() {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "nologin");
    l.boot_timeout = 1.0;
    l.timeout = 30.0;
    let path = l.dir.path().join("silent.sh");
    std::fs::write(&path, "echo 'booting forever'\nexec sleep 60\n").unwrap();
    let job = job(None, vec![console_vm("server", &path, true, &["true"])]);
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    run.line_of("server-1: no login prompt \"login: \" within 1 s (boot timeout)");
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.text());
}

/// A test definition for every node: the server sends its address, everybody waits for it
/// and checks it, everybody syncs; results by `lava-test-case`.
const EXCHANGE: &str = r#"metadata:
  format: Lava-Test Test Definition 1.0
  name: exchange
  description: data and a sync through the MultiNode API
params:
  IP: 10.0.0.7
run:
  steps:
    - lava-test-case role-known --shell test -n "$TARGET_ROLE"
    - if [ "$TARGET_ROLE" = server ]; then lava-send ready ip=$IP; fi
    - lava-wait-all ready server
    - lava-test-case got-ip --shell grep -q "server-1:ip=$IP" "$LAVA_MULTI_NODE_CACHE"
    - lava-sync exchanged
    - lava-test-case synced --result pass --measurement 1 --units sync
"#;

const AFTER: &str = r#"metadata:
  name: cleanup
run:
  steps:
    - lava-test-case vms-gone --result pass
    - lava-test-case deliberate --result fail
"#;

/// The seed's way: `actions` with `lava_test_shell` test definitions run on the host and,
/// over their consoles, in every VM (which have no other way to the coordinator); a second
/// host test shell after the VMs closed; results in a table, results.yaml and junit.xml, and
/// the exit status.
#[test]
fn test_shells_run_on_the_host_and_in_every_vm() {
    seed_flow(false);
}

/// The same with our tools in the guests, over the console transport the launcher sets.
#[test]
fn test_shells_in_vms_use_our_tools_over_the_console() {
    seed_flow(true);
}

fn seed_flow(our_tools: bool) {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "shells");
    l.boot_timeout = 20.0;
    l.timeout = 40.0;
    l.guest_coordinator = Some("127.0.0.1:9".into());
    let helpers = if our_tools {
        l.log_dir().join("bin")
    } else {
        lava_helpers(&l.dir)
    };
    let exchange = l.dir.path().join("exchange.yaml");
    std::fs::write(&exchange, EXCHANGE).unwrap();
    let after = l.dir.path().join("after.yaml");
    std::fs::write(&after, AFTER).unwrap();
    let login_guest = guest_script(&l.dir, &helpers, true);
    let plain_guest = guest_script(&l.dir, &helpers, false);
    let mut job = job(
        None,
        vec![
            console_vm("server", &login_guest, true, &[]),
            console_vm("client", &plain_guest, false, &[]),
        ],
    );
    job["actions"] = json!([
        {"command": "deploy_linaro_image", "parameters": {"image": "file:///nonexistent/host.img", "role": "host"}},
        {"command": "lava_test_shell", "parameters": {"testdef_urls": [format!("file://{}", exchange.display())]}},
        {"command": "lava_test_shell", "parameters": {"testdef_urls": [after.display().to_string()], "role": "host"}},
        {"command": "submit_results", "parameters": {"server": "http://example.invalid/RPC2"}},
    ]);
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 1, "one deliberate failure: {}", run.text());
    for needle in [
        "actions[0]: the host (host) is deployed by the lab",
        "actions[3] submit_results: skipped",
        "host: test definition 0_exchange finished",
        "server-1: test definition 0_exchange finished",
        "client-1: test definition 0_exchange finished",
        "client-1: its steps have ended: reporting its end and powering it off",
        "every member reported status=ok",
        "host: test definition 1_cleanup",
        "1 test case(s) failed: host/1_cleanup/deliberate",
    ] {
        run.line_of(needle);
    }
    assert!(
        run.line_of("every member reported status=ok")
            < run.line_of("host: test definition 1_cleanup started"),
        "the second host test shell runs once the VMs have closed: {}",
        run.text()
    );
    for node in ["host", "server-1", "client-1"] {
        for case in ["role-known", "got-ip", "synced"] {
            let row = format!("{node:<8}  0_exchange       {case:<10}  pass");
            assert!(run.stdout.contains(&row), "no {row:?} in\n{}", run.stdout);
        }
    }
    let yaml = std::fs::read_to_string(l.log_dir().join("results.yaml")).unwrap();
    assert!(
        yaml.contains("- node: client-1\n  suite: 0_exchange\n  name: got-ip\n  result: pass\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("measurement: \"1\"") || yaml.contains("measurement: '1'"),
        "{yaml}"
    );
    let junit = std::fs::read_to_string(l.log_dir().join("junit.xml")).unwrap();
    assert!(
        junit.contains(r#"<testcase name="got-ip" time="0" classname="server-1.0_exchange"/>"#),
        "{junit}"
    );
    assert!(
        junit.contains(
            r#"<testcase name="deliberate" time="0" classname="host.1_cleanup"><failure"#
        ),
        "{junit}"
    );
}

/// The job's `timeout` bounds the run: past it the VMs are stopped and the run fails naming
/// what still ran.
#[test]
fn the_jobs_timeout_stops_the_run_naming_what_still_ran() {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "jobtimeout");
    l.boot_timeout = 20.0;
    l.timeout = 60.0;
    let bin = l.log_dir().join("bin");
    let guest = guest_script(&l.dir, &bin, false);
    let slow = l.dir.path().join("slow.yaml");
    std::fs::write(
        &slow,
        "metadata: {name: slow}\nrun:\n  steps:\n    - sleep 60\n",
    )
    .unwrap();
    let mut job = job(None, vec![console_vm("server", &guest, false, &[])]);
    job["timeout"] = json!(3);
    job["actions"] = json!([
        {"command": "lava_test_shell", "parameters": {"testdef_urls": [slow.display().to_string()], "role": "server"}},
    ]);
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 1, "{}", run.text());
    run.line_of("the job's timeout of 3 s was reached: VM server-1 still ran");
    assert!(run.elapsed < Duration::from_secs(15), "{}", run.text());
    let yaml = std::fs::read_to_string(l.log_dir().join("results.yaml")).unwrap();
    assert!(
        yaml.contains("suite: lava\n  name: 0_slow\n  result: fail"),
        "{yaml}"
    );
}

/// A guest with no `lava-*` tools at all gets ours typed in over its console (the static
/// build of `packaging/build-static.sh`), and its test shell uses them.
#[test]
fn a_guest_without_tools_gets_ours_over_the_console() {
    let dist = lava_multinode_tests::workspace_root()
        .join("dist/x86_64-unknown-linux-musl/lava-multinode");
    if !dist.exists() {
        assert!(
            std::env::var_os("LAVA_MULTINODE_REQUIRE_STATIC").is_none(),
            "{} is missing: run packaging/build-static.sh",
            dist.display()
        );
        eprintln!(
            "SKIPPED: {} is missing (packaging/build-static.sh)",
            dist.display()
        );
        return;
    }
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "notools");
    l.boot_timeout = 20.0;
    l.timeout = 60.0;
    l.guest_coordinator = Some("127.0.0.1:9".into());
    let empty = l.dir.path().join("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    let guest = guest_script(&l.dir, &empty, false);
    let def = l.dir.path().join("selfcheck.yaml");
    std::fs::write(
        &def,
        "metadata: {name: selfcheck}\nrun:\n  steps:\n    - lava-test-case which --shell 'command -v lava-sync | grep -q /tmp/lava-'\n    - lava-send hello from=$(lava-self)\n    - lava-sync tools-typed-in\n    - lava-test-case synced --result pass\n",
    )
    .unwrap();
    let mut job = job(None, vec![console_vm("server", &guest, false, &[])]);
    job["actions"] = json!([
        {"command": "lava_test_shell", "parameters": {"testdef_urls": [def.display().to_string()], "role": "server"}},
    ]);
    let host = host_script(
        &l.dir,
        "lava-sync tools-typed-in\nlava-wait hello | grep -qx 'server-1:from=server-1'\n",
    );
    let run = l.run(&job, &["sh", &host], QUICK);
    assert_eq!(run.code, 0, "{}", run.text());
    run.line_of("server-1: no lava-* tools in the guest: typing in");
    assert!(
        run.stdout.contains("server-1  0_selfcheck      which"),
        "{}",
        run.stdout
    );
}

/// An sshd on a loopback port playing the VM-group host `vm_group.host.ssh` names: root's key
/// login with keys of its own, killed when dropped.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_or_skip(dir: &TempDir, test: &str) -> Option<Sshd> {
    use std::process::{Command, Stdio};
    let sshd = Path::new("/usr/sbin/sshd");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !sshd.exists() || !root {
        let why = "needs root and openssh-server (bash tests/interop/install.sh installs it)";
        assert!(!lava_multinode_tests::vm::vm_required(), "{test}: {why}");
        eprintln!("NOTICE: skipping {test}: {why}");
        return None;
    }
    let d = dir.path();
    for name in ["host_key", "client_key"] {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join(name))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    let port = lava_multinode_tests::free_port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\n\
             UsePAM no\nPidFile {}\nLogLevel ERROR\n",
            d.join("host_key").display(),
            d.join("authorized_keys").display(),
            d.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        lava_multinode_tests::wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(10)),
        "sshd did not start"
    );
    Some(Sshd {
        child,
        port,
        key: d.join("client_key"),
        known_hosts: d.join("known_hosts"),
    })
}

/// `vm_group.host.ssh`: the VMs' commands and the host's test shells run on the host through
/// ssh (their environment shows it), each VM's console streams back through `ssh -tt`, and the
/// MultiNode API still works end to end.
#[test]
fn a_host_reached_over_ssh_runs_the_vms_and_its_test_shells() {
    let server = coordinator();
    let mut l = Launcher::new(&server.addr, "ssh");
    l.boot_timeout = 30.0;
    l.timeout = 60.0;
    let Some(sshd) = sshd_or_skip(
        &l.dir,
        "a_host_reached_over_ssh_runs_the_vms_and_its_test_shells",
    ) else {
        return;
    };
    // The guests use the tools the launcher puts on the host, over their consoles.
    let bin = std::path::PathBuf::from(format!("/tmp/lava-vm-group-{}/bin", l.group));
    let guest = guest_script(&l.dir, &bin, false);
    let def = l.dir.path().join("via-ssh.yaml");
    std::fs::write(
        &def,
        "metadata: {name: via-ssh}\nrun:\n  steps:\n    - lava-test-case over-ssh --shell '[ -n \"$SSH_CONNECTION\" ]'\n    - lava-sync over-ssh\n    - lava-test-case synced --result pass\n",
    )
    .unwrap();
    let mut job = job(
        None,
        vec![console_vm(
            "server",
            &guest,
            false,
            &["test -n \"$SSH_CONNECTION\""],
        )],
    );
    job["vm_group"]["host"]["ssh"] = json!({
        "destination": "root@127.0.0.1",
        "port": sshd.port,
        "identity_file": sshd.key.display().to_string(),
        "options": [format!("UserKnownHostsFile={}", sshd.known_hosts.display())],
    });
    job["actions"] = json!([
        {"command": "lava_test_shell", "parameters": {"testdef_urls": [def.display().to_string()]}},
    ]);
    let run = l.run(&job, &[], QUICK);
    assert_eq!(run.code, 0, "{}", run.text());
    run.line_of("the host is root@127.0.0.1 (over ssh)");
    for node in ["host", "server-1"] {
        for case in ["over-ssh", "synced"] {
            let row = [node, "0_via-ssh", case, "pass"];
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>() == row),
                "no {row:?}: {}",
                run.text()
            );
        }
    }
    assert!(
        !Path::new(&format!("/tmp/lava-vm-group-{}", l.group)).exists(),
        "the run's folder on the host is removed"
    );
}
