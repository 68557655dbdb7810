//! The seed's VM-group job as written: `packaging/vm-guest/seed-job/` is the seed's example
//! job with only its paths changed (a whole-disk image built from Debian's packages by
//! `packaging/vm-guest/build-disk.sh`, booted without `launch_with`), and a variant with
//! `deploy_linaro_kernel`, `auto_start_vms: false`, `count: 2`, a login prompt, a second host
//! test shell and a failing case. Run as outside checks run it:
//! `lava-multinode vm-group run JOB --coordinator ADDR --log-dir DIR`, no host test.
//!
//! Skipped with a notice when qemu or the images cannot be had, failed instead with
//! `LAVA_MULTINODE_REQUIRE_VM=1` (as `.ci/run` sets).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lava_multinode_tests::vm::{self, guest_dir, guest_or_skip, qemu_lock, LauncherRun};
use lava_multinode_tests::{bin, start_coordinator, workspace_root, TempDir};
use serde_json::{json, Value};

/// The whole two-VM run must take less than this without KVM.
const BUDGET: Duration = Duration::from_secs(60);

/// The disk images, built (or brought up to date) once; `None` after saying why not.
fn disks_or_skip(test: &str) -> Option<PathBuf> {
    guest_or_skip(test)?;
    let out = Command::new("sh")
        .arg(workspace_root().join("packaging/vm-guest/build-disk.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("run build-disk.sh");
    if out.status.success() {
        return Some(guest_dir());
    }
    let why = format!(
        "packaging/vm-guest/build-disk.sh failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(!vm::vm_required(), "{test}: {why}");
    eprintln!("NOTICE: skipping {test}: {why}");
    None
}

struct Run {
    out: LauncherRun,
    log_dir: PathBuf,
}

impl std::ops::Deref for Run {
    type Target = LauncherRun;
    fn deref(&self) -> &LauncherRun {
        &self.out
    }
}

impl Run {
    /// Whether the results table has this row (cells as words).
    fn has_row(&self, cells: &[&str]) -> bool {
        self.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.text()))
    }

    /// Every qemu the run started (their pid files) is gone.
    fn assert_no_qemu_left(&self) {
        for entry in std::fs::read_dir(&self.log_dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|x| x == "pid") {
                let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let cmdline =
                    std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&cmdline).contains("qemu"),
                    "qemu {} is still running after the launcher ended",
                    pid.trim()
                );
            }
        }
    }
}

/// `lava-multinode vm-group run JOB --coordinator ADDR --log-dir DIR`, killed (with its
/// VMs, which die with it) if it outlives `limit`.
fn run(job: &Path, coordinator: &str, log_dir: &Path, limit: Duration) -> Run {
    let started = Instant::now();
    let mut cmd = Command::new(bin("lava-multinode"));
    cmd.args(["vm-group", "run"])
        .arg(job)
        .args(["--coordinator", coordinator, "--log-dir"])
        .arg(log_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LAVA_") {
            cmd.env_remove(name);
        }
    }
    let child = cmd.spawn().expect("spawn lava-multinode");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", &pid.to_string()])
            .status();
    });
    let out = child.wait_with_output().expect("wait for lava-multinode");
    let _ = watchdog.join();
    Run {
        out: LauncherRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        },
        log_dir: log_dir.to_owned(),
    }
}

/// The seed's example job, paths changed only: deploy_linaro_image for each role (the host's
/// is the lab's), one lava_test_shell for every node; the VMs have no network device in use
/// and reach the coordinator through their consoles.
#[test]
fn the_seeds_example_job_runs_as_written() {
    let Some(_) = disks_or_skip("the_seeds_example_job_runs_as_written") else {
        return;
    };
    let _one_at_a_time = qemu_lock();
    let dir = TempDir::new("seed-job");
    let made = Command::new("sh")
        .arg(workspace_root().join("packaging/vm-guest/seed-job/make-job.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = start_coordinator(&["--state", ":memory:"]);
    let r = run(
        &dir.path().join("job.json"),
        &server.addr,
        &dir.path().join("logs"),
        BUDGET * 2,
    );
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.elapsed < BUDGET,
        "{:.1} s: {}",
        r.elapsed.as_secs_f64(),
        r.text()
    );
    r.assert_no_qemu_left();
    for node in ["host", "server-1", "client-1"] {
        for case in ["wait-all", "saw-host", "saw-server", "saw-client", "sync"] {
            let row = [node, "0_vm-group-multinode-api", case, "pass"];
            assert!(r.has_row(&row), "no {row:?}:\n{}", r.text());
        }
    }
    let junit = r.file("junit.xml");
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(
        junit.contains(
            r#"<testcase name="saw-host" time="0" classname="client-1.0_vm-group-multinode-api"/>"#
        ),
        "{junit}"
    );
    let results = r.file("results.yaml");
    assert!(
        results.contains("- node: server-1\n  suite: 0_vm-group-multinode-api\n  name: nodes-seen\n  result: pass"),
        "{results}"
    );
    assert!(
        r.stderr
            .contains("actions[0]: the host (host) is deployed by the lab"),
        "{}",
        r.text()
    );
    // The seed's VMs are kvm-arm; the test image is a PC disk.
    if std::env::consts::ARCH == "x86_64" {
        assert!(
            r.stderr.contains("device_type kvm-arm but its image is made for this machine's architecture: booting it as kvm"),
            "{}",
            r.text()
        );
    }
}

const HOST_FIRST: &str = r#"metadata: {name: host-starts-vms}
run:
  steps:
    - lava-start-vms
    - lava-send host-token value=t42
    - lava-wait-all vm-ready server
    - lava-wait-all vm-ready client
    - lava-test-case vms-ready --shell grep -c :from= "$LAVA_MULTI_NODE_CACHE"
    - lava-wait-for-vms
    - lava-test-case vms-done --result pass
"#;

const VM_TEST: &str = r#"metadata: {name: vm-side}
run:
  steps:
    - lava-wait host-token
    - lava-test-case token --shell grep -q host:value=t42 "$LAVA_MULTI_NODE_CACHE"
    - lava-send vm-ready from=$(lava-self)
"#;

const HOST_AFTER: &str = r#"metadata: {name: host-after}
run:
  steps:
    - lava-test-case after-vms --result pass
    - lava-test-case deliberate-failure --result fail
"#;

/// The variant: a kernel deployed for the clients, two servers on the login image logged in
/// by the launcher, the host's test starting the VMs and waiting for them, a second host test
/// shell once they closed, and one failing case, which shows in the table, junit.xml and the
/// exit status.
#[test]
fn a_variant_with_kernel_login_count_manual_start_and_a_failure() {
    let Some(images) =
        disks_or_skip("a_variant_with_kernel_login_count_manual_start_and_a_failure")
    else {
        return;
    };
    let _one_at_a_time = qemu_lock();
    let dir = TempDir::new("seed-variant");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        format!("file://{}", path.display())
    };
    let (host_first, vm_test, host_after) = (
        write("host-first.yaml", HOST_FIRST),
        write("vm-side.yaml", VM_TEST),
        write("host-after.yaml", HOST_AFTER),
    );
    let job: Value = json!({
        "timeout": 300,
        "job_name": "vm-groups variant",
        "vm_group": {
            "host": {"device_type": "x86_64", "role": "host"},
            "auto_start_vms": false,
            "vms": [
                {"device_type": "kvm", "role": "server", "count": 2,
                 "auto_login": {"login_prompt": "login: ", "username": "root",
                                "password_prompt": "Password: ", "password": vm::GUEST_PASSWORD}},
                {"device_type": "kvm", "role": "client"}
            ]
        },
        "actions": [
            {"command": "deploy_linaro_image",
             "parameters": {"image": format!("file://{}", images.join("disk-login.img").display()), "role": "server"}},
            {"command": "deploy_linaro_kernel",
             "parameters": {"kernel": images.join("vmlinuz").display().to_string(),
                            "ramdisk": images.join("initrd.gz").display().to_string(), "role": "client"}},
            {"command": "lava_test_shell", "parameters": {"testdef_urls": [host_first], "role": "host"}},
            {"command": "lava_test_shell", "parameters": {"testdef_urls": [vm_test.clone()], "role": "server"}},
            {"command": "lava_test_shell", "parameters": {"testdef_urls": [vm_test], "role": "client", "timeout": 120}},
            {"command": "lava_test_shell", "parameters": {"testdef_urls": [host_after], "role": "host"}}
        ]
    });
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, serde_json::to_string_pretty(&job).unwrap()).unwrap();
    let server = start_coordinator(&["--state", ":memory:"]);
    let r = run(
        &job_path,
        &server.addr,
        &dir.path().join("logs"),
        BUDGET * 3,
    );
    assert_eq!(
        r.code,
        1,
        "the deliberate failure fails the run: {}",
        r.text()
    );
    r.assert_no_qemu_left();
    for needle in [
        "start gate opened by the host test",
        "server-1: logged in",
        "server-2: logged in",
        "every member reported status=ok",
        "1 test case(s) failed: host/1_host-after/deliberate-failure",
    ] {
        assert!(r.stderr.contains(needle), "no {needle:?}:\n{}", r.text());
    }
    let after = r
        .stderr
        .find("host: test definition 1_host-after started")
        .unwrap_or(0);
    let closed = r
        .stderr
        .find("every member reported status=ok")
        .unwrap_or(usize::MAX);
    assert!(
        closed < after,
        "the second host test shell runs after the VMs closed:\n{}",
        r.text()
    );
    for node in ["server-1", "server-2", "client-1"] {
        let row = [node, "0_vm-side", "token", "pass"];
        assert!(r.has_row(&row), "no {row:?}:\n{}", r.text());
    }
    for case in ["vms-ready", "vms-done"] {
        assert!(
            r.has_row(&["host", "0_host-starts-vms", case, "pass"]),
            "{}",
            r.text()
        );
    }
    assert!(
        r.has_row(&["host", "1_host-after", "deliberate-failure", "fail"]),
        "{}",
        r.text()
    );
    let junit = r.file("junit.xml");
    assert!(
        junit.contains(
            r#"<testcase name="deliberate-failure" time="0" classname="host.1_host-after"><failure"#
        ),
        "{junit}"
    );
}
