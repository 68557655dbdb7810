//! `lava-multinode vm-group run`: the host side of a VM group.
//!
//! 1. declares the group's roster (every node's client name and role) as the host;
//! 2. opens the VMs' start gate at once (`auto_start_vms: true`), or waits until the host's
//!    test opens it with `lava-start-vms`;
//! 3. then launches every VM: its `launch_with` commands in order, the last one's output being
//!    the VM's console, copied to `LOG_DIR/CLIENT.log` and watched for `shell_prompt` (not
//!    seen within the boot timeout: the VM is killed and has failed);
//! 4. when a VM's process ends and its guest has not reported its end (`lava-vm-done`), reports
//!    `lava_vm_stop status=failed` in the guest's name, so nobody waits for a dead VM;
//! 5. runs the host test command meanwhile; when it has ended, reports the host's end (failed
//!    when the test failed) and waits for every member's end (`lava-wait-for-vms`);
//! 6. waits for the VM processes to end, runs the `--after` commands, clears the group,
//!    writes `report.html` (`report.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lava_protocol::{RequestKind, VM_START_ID, VM_STOP_ID};
use serde_json::Value;

use super::actions::JobAction;
use super::console::{self, Pty};
use super::deploy::{self, Launch};
use super::guest::{self, Guest};
use super::host;
use super::images::{self, Deployed};
use super::job::{self, Job, Node, VmSpec};
use super::qemu;
use super::remote::{self, Remote};
use super::results::{CaseResult, Collector};
use super::testshell;
use super::testshell::Shell;
use crate::commands::vm;
use crate::error::Error;
use crate::wait::{self, Session};

/// Everything `run` needs, from the command line and the settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub job: Job,
    /// The coordinator as the host reaches it.
    pub coordinator: String,
    /// The coordinator as the guests reach it (`{coordinator}`).
    pub guest_coordinator: String,
    pub group: String,
    /// The host's address for the guests (`host_ip` of the start gate, `{host_ip}`).
    pub host_ip: String,
    pub log_dir: PathBuf,
    pub boot_timeout: Duration,
    /// Longest wait for the VMs' ends once the host test has finished.
    pub timeout: Duration,
    pub poll: Duration,
    /// The host test: a program and its arguments (empty: none).
    pub test: Vec<String>,
    /// Shell commands run after every VM has ended.
    pub after: Vec<String>,
    pub debug: bool,
    /// The lab's and the group's secrets, passed on to the host test and the guests.
    pub secret: Option<String>,
    pub group_secret: Option<String>,
}

/// Time allowed for a request that is answered at once (retries included).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a VM may take to end after every member reported its end, before it is killed.
const END_GRACE: Duration = Duration::from_secs(30);
/// How long the VMs may still take to end when the host test has failed.
const HOST_FAILED_GRACE: Duration = Duration::from_secs(10);

/// Progress lines on stderr, with the time since the launcher started.
pub struct Log {
    start: Instant,
}

impl Log {
    pub fn new() -> Log {
        Log {
            start: Instant::now(),
        }
    }

    pub(super) fn say(&self, text: &str) {
        // One write: standard error is unbuffered, and lines of several VM threads must not
        // interleave.
        let line = format!(
            "vm-group [{:6.1} s] {text}\n",
            self.start.elapsed().as_secs_f64()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
}

/// What runs on the launcher's behalf, to stop it on a timeout: the VMs' process groups and
/// the host test's process, each with a name for messages.
#[derive(Default)]
pub struct Running(Mutex<Vec<(u32, String, bool)>>);

impl Running {
    pub(super) fn list(&self) -> std::sync::MutexGuard<'_, Vec<(u32, String, bool)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// A process group (a VM's).
    pub(super) fn add(&self, pgid: u32, what: &str) {
        self.list().push((pgid, what.to_owned(), true));
    }
    /// A single process (the host's test, in the launcher's own process group).
    pub(super) fn add_process(&self, pid: u32, what: &str) {
        self.list().push((pid, what.to_owned(), false));
    }
    pub(super) fn remove(&self, id: u32) {
        self.list().retain(|(p, _, _)| *p != id);
    }
    /// What is running, by name.
    pub(super) fn names(&self) -> Vec<String> {
        self.list().iter().map(|(_, n, _)| n.clone()).collect()
    }
    pub(super) fn kill_all(&self) {
        for (id, _, group) in self.list().iter() {
            if *group {
                kill_group(*id);
            } else {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &id.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Makes the kernel send SIGTERM to a VM's process when the launcher's thread that started it
/// dies (the launcher killed, or interrupted with Ctrl-C, which does not reach the VMs' own
/// process groups), so that no VM outlives its launcher.
#[cfg(target_os = "linux")]
fn die_with_launcher(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGTERM: u64 = 15;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_launcher(_cmd: &mut Command) {}

/// SIGKILL to a process group (std has no killpg; `kill` is on every system with a shell).
pub(super) fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

/// How one VM went, as the launcher saw it.
#[derive(Debug, Clone)]
pub struct VmReport {
    pub client: String,
    pub role: String,
    /// When the launcher started it, ms since the Unix epoch (for the report's timeline).
    pub started_ms: u64,
    pub booted_after: Option<Duration>,
    pub ran: Duration,
    /// Set when the launcher reported `status=failed` in the guest's name, with the reason.
    pub launcher_failure: Option<String>,
    pub log: PathBuf,
    /// What its test shells gave.
    pub results: Vec<CaseResult>,
}

enum Event {
    /// The start gate is open; the host's address the gate carries.
    Gate(Result<String, Error>),
    /// The host test ended: `None` when it succeeded, else why not.
    HostTest(Option<String>),
    Vm(VmReport),
}

/// What every VM thread shares.
pub struct Shared {
    pub(super) opts: Options,
    pub(super) log: Log,
    pub(super) running: Running,
    pub(super) bin_dir: PathBuf,
    /// This machine's host name, read once (every request carries it).
    pub(super) hostname: String,
    /// Every role's test shells, fetched and parsed before anything started.
    pub(super) tests: Vec<(String, Vec<Shell>)>,
    /// The VMs' deployed images and the default launcher's accelerator.
    pub(super) launch: Launch,
}

impl Shared {
    /// The test shells of the nodes of `role`.
    pub(super) fn shells_of(&self, role: &str) -> &[Shell] {
        self.tests
            .iter()
            .find(|(r, _)| r == role)
            .map_or(&[], |(_, s)| s.as_slice())
    }

    pub(super) fn session(&self, client: &str, role: &str, timeout: Duration) -> Session {
        Session {
            addr: self.opts.coordinator.clone(),
            group: self.opts.group.clone(),
            client: client.to_owned(),
            role: role.to_owned(),
            hostname: self.hostname.clone(),
            group_size: Some(self.opts.job.group_size()),
            timeout,
            poll: self.opts.poll,
            lease: Duration::from_secs_f64(crate::config::DEFAULT_LEASE),
            start: Instant::now(),
            debug: self.opts.debug,
            call_id: wait::call_id(client),
            secret: self.opts.secret.clone(),
            group_secret: self.opts.group_secret.clone(),
        }
    }

    fn host(&self, timeout: Duration) -> Session {
        let role = &self.opts.job.host_role;
        self.session(role, role, timeout)
    }

    /// The environment of the host's commands: the host's settings and the lava-* tools.
    pub(super) fn host_env(&self) -> Vec<(String, String)> {
        let o = &self.opts;
        let path = match std::env::var("PATH") {
            Ok(p) if !p.is_empty() => format!("{}:{p}", self.bin_dir.display()),
            _ => format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin_dir.display()),
        };
        [
            ("LAVA_MULTINODE_COORDINATOR", o.coordinator.clone()),
            ("LAVA_MULTINODE_GROUP", o.group.clone()),
            ("LAVA_MULTINODE_CLIENT", o.job.host_role.clone()),
            ("LAVA_MULTINODE_ROLE", o.job.host_role.clone()),
            ("LAVA_MULTINODE_GROUP_SIZE", o.job.group_size().to_string()),
            ("LAVA_MULTINODE_HOST_IP", o.host_ip.clone()),
            ("LAVA_VM_GROUP_LOG_DIR", o.log_dir.display().to_string()),
            ("PATH", path),
        ]
        .into_iter()
        .chain(
            [
                ("LAVA_MULTINODE_SECRET", &o.secret),
                ("LAVA_MULTINODE_GROUP_SECRET", &o.group_secret),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        )
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The settings of a VM's test shells: our tools over the console, with the identity LAVA's
/// test shell gives too.
fn guest_environment(opts: &Options, node: &Node, host_ip: &str) -> Vec<(String, String)> {
    let root = testshell::guest_root(&opts.group, &node.client);
    let mut env: Vec<(String, String)> = [
        ("LAVA_MULTINODE_TRANSPORT", "console".to_owned()),
        ("LAVA_MULTINODE_GROUP", opts.group.clone()),
        ("LAVA_MULTINODE_CLIENT", node.client.clone()),
        ("LAVA_MULTINODE_ROLE", node.role.clone()),
        (
            "LAVA_MULTINODE_GROUP_SIZE",
            opts.job.group_size().to_string(),
        ),
        ("LAVA_MULTINODE_TIMEOUT", opts.timeout.as_secs().to_string()),
        ("LAVA_MULTINODE_HOST_IP", host_ip.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(testshell::lava_identity(
        &opts.job,
        &node.client,
        &node.role,
        &root,
    ));
    env.push(("LAVA_VM_GROUP_NODE".into(), node.client.clone()));
    env
}

/// The values of a VM's placeholders; `host_ip` is the gate's.
pub fn placeholder_values(
    opts: &Options,
    node: &Node,
    spec: &VmSpec,
    host_ip: &str,
    launch: &Launch,
) -> Vec<(&'static str, Option<String>)> {
    let image = spec.image.clone().or_else(|| {
        launch
            .of(&node.role)
            .and_then(|d| d.image.as_ref())
            .map(|p| p.display().to_string())
    });
    let size = opts.job.group_size().to_string();
    let cmdline = [
        job::kernel_param("coordinator", &opts.guest_coordinator),
        job::kernel_param("group", &opts.group),
        job::kernel_param("client", &node.client),
        job::kernel_param("role", &node.role),
        job::kernel_param("group_size", &size),
    ]
    .into_iter()
    .chain(
        [
            ("secret", &opts.secret),
            ("group_secret", &opts.group_secret),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| job::kernel_param(k, v))),
    )
    .collect::<Vec<_>>()
    .join(" ");
    vec![
        ("coordinator", Some(opts.guest_coordinator.clone())),
        ("group", Some(opts.group.clone())),
        ("client", Some(node.client.clone())),
        ("role", Some(node.role.clone())),
        ("group_size", Some(size)),
        ("host_ip", Some(host_ip.to_owned())),
        ("image", image),
        ("kernel_cmdline", Some(cmdline)),
        ("index", node.vm.map(|(_, n)| n.to_string())),
        ("device_type", Some(node.device_type.clone())),
        ("log_dir", Some(log_dir_there(opts).display().to_string())),
    ]
}

/// The log folder as the VMs' commands see it: this machine's, or the run's folder on a host
/// reached over ssh.
pub fn log_dir_there(opts: &Options) -> PathBuf {
    match &opts.job.host_ssh {
        Some(_) => PathBuf::from(Remote::dir(&opts.group)),
        None => opts.log_dir.clone(),
    }
}

/// A VM's commands with their placeholders replaced: its `launch_with`, else the default
/// launcher's qemu command for its `device_type` and deployed images (`disk`: its writable
/// overlay, when a whole-disk image was deployed). Errors name the field.
pub fn commands_of(
    opts: &Options,
    node: &Node,
    host_ip: &str,
    launch: &Launch,
    disk: Option<&Path>,
) -> Result<(VmSpec, Vec<String>), String> {
    let (index, _) = node.vm.expect("a VM node");
    let spec = opts.job.vms[index].clone();
    let values = placeholder_values(opts, node, &spec, host_ip, launch);
    let value = |name: &str| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for (j, cmd) in spec.launch_with.iter().enumerate() {
        let done = job::substitute(cmd, &value)
            .map_err(|e| format!("vm_group.vms[{index}].launch_with[{j}]: {e}"))?;
        out.push(done);
    }
    if out.is_empty() {
        let nothing = Deployed::default();
        let deployed = launch.of(&node.role).unwrap_or(&nothing);
        let disk = disk.filter(|_| deployed.image.is_some());
        let cmd = qemu::default_command(
            deploy::device_type_for(&spec.device_type, deployed),
            deployed,
            disk,
            &node.client,
            &log_dir_there(opts),
            launch.accel,
        )
        .map_err(|e| {
            format!(
                "vm_group.vms[{index}] (no launch_with, device_type {:?}): {e}",
                spec.device_type
            )
        })?;
        let done = job::substitute(&cmd, &value)
            .map_err(|e| format!("vm_group.vms[{index}] default launcher: {e}"))?;
        out.push(done);
    }
    // On a host reached over ssh, every command runs there; the last one, the console, on a
    // terminal of its own there.
    if let Some(remote) = &opts.job.host_ssh {
        let last = out.len() - 1;
        for (j, cmd) in out.iter_mut().enumerate() {
            *cmd = remote.wrap(cmd, j == last);
        }
    }
    Ok((spec, out))
}

/// How a VM's process came to its end, as the launcher saw it.
enum VmEnd {
    /// It ended by itself, with this exit status: a failure only if the guest did not report
    /// its end.
    ProcessEnded(String),
    /// The launcher counts it failed, for this reason.
    Failed(String),
}

/// Runs one VM to its end and reports how it went.
fn supervise(shared: &Arc<Shared>, node: &Node, host_ip: &str) -> VmReport {
    let started = Instant::now();
    let log_path = shared.opts.log_dir.join(format!("{}.log", node.client));
    let mut report = VmReport {
        client: node.client.clone(),
        role: node.role.clone(),
        started_ms: super::report::wall_ms(),
        booted_after: None,
        ran: Duration::ZERO,
        launcher_failure: None,
        log: log_path.clone(),
        results: Vec::new(),
    };
    let end = run_vm(shared, node, host_ip, &log_path, &mut report);
    report.ran = started.elapsed();
    finish_vm(shared, node, end, &mut report);
    report
}

/// Launches the VM and follows its console to the end; returns the launcher's reason to
/// count it failed, if it has one (the guest's own report decides otherwise).
fn run_vm(
    shared: &Arc<Shared>,
    node: &Node,
    host_ip: &str,
    log_path: &Path,
    report: &mut VmReport,
) -> VmEnd {
    let say = |t: &str| shared.log.say(&format!("{}: {t}", node.client));
    let (index, _) = node.vm.expect("a VM node");
    // A VM the default launcher boots from a whole-disk image writes to an overlay of its own.
    let mut disk = None;
    if shared.opts.job.vms[index].launch_with.is_empty() {
        if let Some(base) = shared.launch.of(&node.role).and_then(|d| d.image.clone()) {
            let made = match &shared.opts.job.host_ssh {
                Some(remote) => {
                    let path = deploy::disk_path(&log_dir_there(&shared.opts), &node.client);
                    remote::overlay(remote, &base, &path).map(|()| path)
                }
                None => images::overlay(&base, &shared.opts.log_dir, &node.client)
                    .map_err(|e| e.to_string()),
            };
            match made {
                Ok(path) => disk = Some(path),
                Err(e) => return VmEnd::Failed(e),
            }
        }
    }
    let (spec, commands) =
        match commands_of(&shared.opts, node, host_ip, &shared.launch, disk.as_deref()) {
            Ok(c) => c,
            Err(e) => return VmEnd::Failed(e),
        };
    let mut log = match File::create(log_path) {
        Ok(f) => f,
        Err(e) => return VmEnd::Failed(format!("cannot create {}: {e}", log_path.display())),
    };
    let values = placeholder_values(&shared.opts, node, &spec, host_ip, &shared.launch);
    let shell = |cmd: &str| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd).stdin(Stdio::null());
        for (name, value) in &values {
            if let Some(v) = value {
                c.env(format!("LAVA_VM_{}", name.to_ascii_uppercase()), v);
            }
        }
        c
    };
    let (last, setup) = commands.split_last().expect("at least one command");
    for (j, cmd) in setup.iter().enumerate() {
        let (Ok(out), Ok(err)) = (log.try_clone(), log.try_clone()) else {
            return VmEnd::Failed(format!("cannot write {}", log_path.display()));
        };
        let status = shell(cmd).stdout(out).stderr(err).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return VmEnd::Failed(format!(
                    "launch_with[{j}] ended with {}: {cmd}",
                    describe_status(&s)
                ))
            }
            Err(e) => return VmEnd::Failed(format!("launch_with[{j}] could not run: {e}")),
        }
    }

    // The console: the last command on a pseudo-terminal.
    let pty = match Pty::open() {
        Ok(p) => p,
        Err(e) => return VmEnd::Failed(format!("cannot open a pseudo-terminal: {e}")),
    };
    let mut command = shell(last);
    if let Err(e) = pty.attach(&mut command) {
        return VmEnd::Failed(format!(
            "cannot give the console to launch_with[{}]: {e}",
            setup.len()
        ));
    }
    die_with_launcher(&mut command);
    let spawned = command.spawn();
    drop(command); // closes this process's copies of the terminal
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => return VmEnd::Failed(format!("launch_with[{}] could not run: {e}", setup.len())),
    };
    let master = pty.into_master();
    // A session of its own: its process group is its pid.
    let pgid = child.id();
    shared.running.add(pgid, &format!("VM {}", node.client));
    let launched = Instant::now();
    say(&format!(
        "launched (pid {pgid}); console in {}",
        log_path.display()
    ));

    let shells = shared.shells_of(&node.role);
    let environment = guest_environment(&shared.opts, node, host_ip);
    let root = testshell::guest_root(&shared.opts.group, &node.client);
    let guest = Guest {
        shared,
        node,
        spec: &spec,
        steps: guest::plan(&spec, &root, shells, &environment, shared.opts.timeout),
        root,
        collector: guest::collector_for(&node.client, shells),
        pgid,
        launched,
    };
    let driven = guest::drive(guest, master, &mut log, &mut report.booted_after);
    report.results = driven.results;
    let status = child.wait();
    // Whatever the command left behind in its process group goes with it.
    kill_group(pgid);
    shared.running.remove(pgid);
    let status = match status {
        Ok(s) => describe_status(&s),
        Err(e) => format!("unknown status ({e})"),
    };
    say(&format!(
        "process ended ({status}) after {:.1} s",
        launched.elapsed().as_secs_f64()
    ));
    match driven.failure {
        Some(f) => {
            let tail = console::last_line(&driven.last)
                .map(|l| format!("; last console line: {l}"))
                .unwrap_or_default();
            VmEnd::Failed(format!("{f}{tail}"))
        }
        // Only counts when the guest did not report its end itself.
        None => VmEnd::ProcessEnded(status),
    }
}

/// The guests' reports so far: `lava_vm_stop` data by sender (empty when nobody sent).
fn stop_reports(s: &Session) -> Result<serde_json::Map<String, Value>, Error> {
    let reply = s.ask(RequestKind::Wait {
        id: VM_STOP_ID.to_owned(),
    })?;
    Ok(match reply.message {
        Some(Value::Object(m)) if !reply.is_wait() => m,
        _ => serde_json::Map::new(),
    })
}

/// After a VM's process ended: when its guest did not report its end, report
/// `status=failed` in its name.
fn finish_vm(shared: &Shared, node: &Node, end: VmEnd, report: &mut VmReport) {
    let say = |t: &str| shared.log.say(&format!("{}: {t}", node.client));
    let host = shared.host(CALL_TIMEOUT);
    let reported = match stop_reports(&host) {
        Ok(m) => m.get(&node.client).cloned(),
        Err(e) => {
            say(&format!("cannot read the VMs' reports: {e}"));
            None
        }
    };
    if let Some(data) = reported {
        let status = data.get("status").and_then(Value::as_str).unwrap_or("ok");
        say(&format!("the guest reported its end: status={status}"));
        return;
    }
    let reason = match end {
        VmEnd::ProcessEnded(status) => format!(
            "VM process ended ({status}) without the guest reporting its end (lava-vm-done)"
        ),
        VmEnd::Failed(why) => why,
    };
    let reason = format!("{reason}; console: {}", report.log.display());
    say(&format!("reporting status=failed for it: {reason}"));
    let guest = shared.session(&node.client, &node.role, CALL_TIMEOUT);
    if let Err(e) = vm::vm_done(&guest, Some(&reason)) {
        say(&format!("could not report its failure: {e}"));
    }
    // Also end, at once, whatever the other members wait for from this guest (a sync, a
    // wait-all); LAVA's coordinator does not know `fail`, which changes nothing there.
    if let Err(e) = crate::commands::fail::fail(&guest, &reason) {
        say(&format!("could not declare it failed: {e}"));
    }
    report.launcher_failure = Some(reason);
}

/// Runs the host test (a program and its arguments).
fn run_host_test(shared: &Shared, argv: &[String]) -> Option<String> {
    let log = &shared.log;
    log.say(&format!("host test: {}", argv.join(" ")));
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(shared.host_env())
        .spawn()
        .and_then(|mut child| {
            shared.running.add_process(child.id(), "the host test");
            let status = child.wait();
            shared.running.remove(child.id());
            status
        });
    match status {
        Ok(s) if s.success() => {
            log.say("host test passed");
            None
        }
        Ok(s) => {
            let why = format!("host test ended with {}", describe_status(&s));
            log.say(&why);
            Some(why)
        }
        Err(e) => {
            let why = format!("host test {:?} could not run: {e}", argv[0]);
            log.say(&why);
            Some(why)
        }
    }
}

/// Runs one `--after` shell command.
fn run_after(shared: &Shared, cmd: &str) -> Option<String> {
    shared.log.say(&format!("after step: {cmd}"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(shared.host_env())
        .status();
    match status {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!(
            "after step ended with {}: {cmd}",
            describe_status(&s)
        )),
        Err(e) => Some(format!("after step could not run: {e}")),
    }
}

/// Writes `results.yaml` and `junit.xml` to the log folder and prints the table; returns a
/// failure when a case failed.
fn report_results(shared: &Shared, results: &[CaseResult]) -> Option<String> {
    let has_tests = shared.tests.iter().any(|(_, s)| !s.is_empty());
    if results.is_empty() && !has_tests {
        return None;
    }
    let dir = &shared.opts.log_dir;
    let mut problems = Vec::new();
    if let Err(e) = std::fs::write(
        dir.join("results.yaml"),
        super::results::results_yaml(results),
    ) {
        problems.push(format!("cannot write results.yaml: {e}"));
    }
    match super::results::junit_xml(results) {
        Ok(xml) => {
            if let Err(e) = std::fs::write(dir.join("junit.xml"), xml) {
                problems.push(format!("cannot write junit.xml: {e}"));
            }
        }
        Err(e) => problems.push(format!("cannot make junit.xml: {e}")),
    }
    let table = super::results::table(results);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), table.as_bytes());
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.failed())
        .map(|r| format!("{}/{}/{}", r.node, r.suite, r.case))
        .collect();
    shared.log.say(&format!(
        "results: {} cases, {} failed; {} and {}",
        results.len(),
        failed.len(),
        dir.join("results.yaml").display(),
        dir.join("junit.xml").display()
    ));
    if !failed.is_empty() {
        problems.push(format!(
            "{} test case(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Writes `report.html`, with the coordinator's history of the group when it keeps one.
fn write_report(
    shared: &Shared,
    rows: &[super::report::NodeRow],
    results: &[CaseResult],
    failures: &[String],
) {
    use super::report::{self, Source};
    let o = &shared.opts;
    let (log, source) =
        match report::coordinator_history(&o.coordinator, &o.group, o.secret.as_deref()) {
            Some(log) => (log, Source::Coordinator),
            None => (report::own_record(&o.group, rows), Source::Launcher),
        };
    let page = report::html(&o.group, rows, results, failures, &log, source);
    match report::write(&o.log_dir, &page) {
        Ok(path) => shared.log.say(&format!("report: {}", path.display())),
        Err(e) => shared.log.say(&e),
    }
}

/// The host's address carried by the start gate's reply, else `fallback`.
fn gate_host_ip(reply: &lava_protocol::Reply, fallback: &str) -> String {
    if let Some(ip) = reply.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
        return ip.to_owned();
    }
    reply
        .message
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|m| {
            m.values()
                .find_map(|d| d.get("host_ip").and_then(Value::as_str))
        })
        .filter(|ip| !ip.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

/// Waits for the start gate (`vm_wait_start`, or `lava_wait lava_vm_start` against LAVA's
/// coordinator).
fn wait_gate(s: &Session, fallback_ip: &str) -> Result<String, Error> {
    let what = format!("the start gate of group {:?} (lava-start-vms)", s.group);
    let reply = match s.wait(RequestKind::VmWaitStart, &what) {
        Err(e) if e.is_bare_nack() => s.wait(
            RequestKind::Wait {
                id: VM_START_ID.to_owned(),
            },
            &what,
        )?,
        other => other?,
    };
    Ok(gate_host_ip(&reply, fallback_ip))
}

/// Whether the gate is open now, without waiting: its host address if so.
fn gate_now(s: &Session, fallback_ip: &str) -> Option<String> {
    let reply = s
        .ask(RequestKind::Wait {
            id: VM_START_ID.to_owned(),
        })
        .ok()?;
    (!reply.is_wait()).then(|| gate_host_ip(&reply, fallback_ip))
}

/// The VMs' images (fetched into the log folder with `fetch`, else as given) and, when a VM
/// has no `launch_with`, the accelerator the default launcher uses (probed; logged).
pub fn prepare_launch(opts: &Options, log: &Log, fetch: bool) -> Result<Launch, Error> {
    let dir = fetch.then_some(opts.log_dir.as_path());
    let deployed = deploy::deploy(&opts.job, dir).map_err(Error::Job)?;
    let mut launch = Launch {
        deployed,
        accel: qemu::Accel::Tcg,
    };
    for (role, d) in &launch.deployed {
        let given = opts
            .job
            .vms
            .iter()
            .find(|v| v.role == *role && v.launch_with.is_empty())
            .map(|v| v.device_type.as_str());
        if let Some(given) = given {
            let used = deploy::device_type_for(given, d);
            if used != given && fetch {
                log.say(&format!(
                    "{role}: device_type {given} but its image is made for this machine's \
                     architecture: booting it as {used}"
                ));
            }
        }
        let what = [
            ("image", &d.image),
            ("kernel", &d.kernel),
            ("ramdisk", &d.ramdisk),
            ("dtb", &d.dtb),
            ("rootfs", &d.rootfs),
        ]
        .into_iter()
        .filter_map(|(n, p)| p.as_ref().map(|p| format!("{n} {}", p.display())))
        .collect::<Vec<_>>();
        if !what.is_empty() && fetch {
            log.say(&format!("deployed for {role}: {}", what.join(", ")));
        }
    }
    if opts.job.vms.iter().any(|v| v.launch_with.is_empty()) {
        let (accel, why) = qemu::probe_accel();
        if fetch {
            log.say(&match accel {
                qemu::Accel::Kvm => format!("default launcher: KVM ({why})"),
                qemu::Accel::Tcg => format!("default launcher: KVM not usable ({why}): TCG"),
            });
        }
        launch.accel = accel;
    }
    Ok(launch)
}

/// The whole run. `Ok` when every member finished with `status=ok` and every host step passed.
pub fn run(opts: Options) -> Result<(), Error> {
    let log = Log {
        start: Instant::now(),
    };
    let nodes = opts.job.nodes();
    let vms: Vec<Node> = nodes.iter().filter(|n| n.vm.is_some()).cloned().collect();

    std::fs::create_dir_all(&opts.log_dir)
        .map_err(|e| Error::Local(format!("cannot create {}: {e}", opts.log_dir.display())))?;
    // The deployed images are fetched (and decompressed) into the log folder, and every VM's
    // commands must expand, before anything starts.
    let mut launch = prepare_launch(&opts, &log, true)?;
    if let Some(remote) = &opts.job.host_ssh {
        let dir = Remote::dir(&opts.group);
        log.say(&format!(
            "the host is {} (over ssh): putting the tools and images in {dir} there",
            remote.destination
        ));
        remote::install_tools(remote, &dir).map_err(Error::Local)?;
        remote::copy_images(remote, &dir, &mut launch.deployed).map_err(Error::Local)?;
    }
    for node in &vms {
        let disk = deploy::disk_path(&log_dir_there(&opts), &node.client);
        commands_of(&opts, node, &opts.host_ip, &launch, Some(&disk)).map_err(Error::Job)?;
    }
    // Every test definition is fetched and parsed before anything starts.
    let mut roles = vec![opts.job.host_role.clone()];
    for spec in &opts.job.vms {
        if !roles.contains(&spec.role) {
            roles.push(spec.role.clone());
        }
    }
    let work = opts.log_dir.join("testdefs");
    let mut tests = Vec::new();
    for role in roles {
        let shells = testshell::plan(&opts.job, &role, &work).map_err(Error::Job)?;
        tests.push((role, shells));
    }
    let host_has_shells = tests[0].1.iter().any(|s| !s.runs.is_empty());
    if !opts.job.auto_start_vms && opts.test.is_empty() && !host_has_shells {
        return Err(Error::Usage(
            "auto_start_vms is false but no host test is given: nothing would call \
             lava-start-vms"
                .into(),
        ));
    }
    let bin_dir = opts.log_dir.join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| Error::Local(format!("cannot create {}: {e}", bin_dir.display())))?;
    crate::commands::install::install(&bin_dir, true)?;

    let shared = Arc::new(Shared {
        opts: opts.clone(),
        log,
        running: Running::default(),
        bin_dir,
        hostname: wait::hostname(),
        tests,
        launch,
    });
    let log = &shared.log;
    for (i, action) in opts.job.actions.iter().enumerate() {
        match action {
            JobAction::Skipped { command, reason } => {
                log.say(&format!("actions[{i}] {command}: skipped: {reason}"))
            }
            JobAction::DeployImage { role: Some(r), .. }
            | JobAction::DeployKernel { role: Some(r), .. }
                if *r == opts.job.host_role =>
            {
                log.say(&format!(
                    "actions[{i}]: the host ({r}) is deployed by the lab, not by this launcher"
                ))
            }
            _ => {}
        }
    }
    // The job's timeout bounds the whole run: past it, whatever still runs is stopped.
    let timed_out: Arc<Mutex<Option<String>>> = Arc::default();
    let (_watchdog_stop, watchdog) = mpsc::channel::<()>();
    if let Some(limit) = opts.job.timeout {
        let shared = Arc::clone(&shared);
        let timed_out = Arc::clone(&timed_out);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(limit) {
                let running = shared.running.names();
                let what = if running.is_empty() {
                    "the launcher was still waiting".to_owned()
                } else {
                    format!("{} still ran", running.join(", "))
                };
                let why = format!(
                    "the job's timeout of {} s was reached: {what}",
                    limit.as_secs_f64()
                );
                shared.log.say(&format!("{why}; stopping everything"));
                *timed_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                shared.running.kill_all();
            }
        });
    }
    let host_shells = shared.shells_of(&opts.job.host_role).to_vec();
    if host_has_shells {
        host::prepare(&shared, &host_shells).map_err(Error::Local)?;
    }
    let host_results = Arc::new(Mutex::new(Collector::new(&opts.job.host_role)));
    let host = shared.host(CALL_TIMEOUT);

    let roster: lava_protocol::message::Roles = nodes
        .iter()
        .map(|n| (n.client.clone(), n.role.clone()))
        .collect();
    match host.call(RequestKind::DeclareRoster { roster }) {
        Ok(_) => {}
        // LAVA's coordinator has no roster: the group forms as members register.
        Err(e) if e.is_bare_nack() => {
            log.say("the coordinator has no declare_roster (LAVA's?): going on without it")
        }
        Err(e) => return Err(e),
    }
    let members: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} ({})", n.client, n.role))
        .collect();
    log.say(&format!(
        "group {:?} of {} at {}: {}; logs in {}",
        opts.group,
        opts.job.group_size(),
        opts.coordinator,
        members.join(", "),
        opts.log_dir.display()
    ));

    let (tx, rx) = mpsc::channel::<Event>();
    let mut gate: Option<String> = None;
    if opts.job.auto_start_vms {
        vm::start_vms(&host, &opts.host_ip)?;
        log.say(&format!("start gate opened (host_ip={})", opts.host_ip));
        gate = Some(opts.host_ip.clone());
    } else {
        log.say("auto_start_vms is false: the VMs start when the host test calls lava-start-vms");
        let tx = tx.clone();
        let s = shared.host(opts.timeout);
        let ip = opts.host_ip.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Event::Gate(wait_gate(&s, &ip)));
        });
    }

    let mut vm_threads = Vec::new();
    let launch = |host_ip: &str, threads: &mut Vec<std::thread::JoinHandle<()>>| {
        for node in &vms {
            let shared = Arc::clone(&shared);
            let node = node.clone();
            let tx = tx.clone();
            let ip = host_ip.to_owned();
            threads.push(std::thread::spawn(move || {
                let report = supervise(&shared, &node, &ip);
                let _ = tx.send(Event::Vm(report));
            }));
        }
    };
    if let Some(ip) = &gate {
        launch(ip, &mut vm_threads);
    }

    let mut failures: Vec<String> = Vec::new();
    let mut reports: Vec<VmReport> = Vec::new();
    let host_failure = if opts.test.is_empty() && !host_has_shells {
        None
    } else {
        // The host's test: the `--` command, then the host's first test shell.
        let tx = tx.clone();
        let shared = Arc::clone(&shared);
        let argv = opts.test.clone();
        let first = host_shells.first().cloned();
        let results = Arc::clone(&host_results);
        std::thread::spawn(move || {
            let mut failure = None;
            if !argv.is_empty() {
                failure = run_host_test(&shared, &argv);
            }
            if let Some(shell) = first {
                host::run_shell(&shared, &shell, &results);
            }
            let _ = tx.send(Event::HostTest(failure));
        });
        loop {
            match rx.recv().expect("the launcher holds a sender") {
                Event::HostTest(result) => break result,
                Event::Gate(Ok(ip)) if gate.is_none() => {
                    log.say(&format!(
                        "start gate opened by the host test (host_ip={ip})"
                    ));
                    launch(&ip, &mut vm_threads);
                    gate = Some(ip);
                }
                Event::Gate(Ok(_)) => {}
                Event::Gate(Err(e)) => log.say(&format!("stopped waiting for the start gate: {e}")),
                Event::Vm(r) => reports.push(r),
            }
        }
    };
    if let Some(f) = &host_failure {
        failures.push(f.clone());
    }

    if gate.is_none() {
        // The test may have opened the gate just before it ended.
        if let Some(ip) = gate_now(&host, &opts.host_ip) {
            log.say(&format!(
                "start gate opened by the host test (host_ip={ip})"
            ));
            launch(&ip, &mut vm_threads);
            gate = Some(ip);
        }
    }
    if gate.is_none() {
        let reason = "never started: the host test ended without calling lava-start-vms";
        log.say(&format!("the VMs {reason}"));
        for node in &vms {
            let guest = shared.session(&node.client, &node.role, CALL_TIMEOUT);
            vm::vm_done(&guest, Some(reason))?;
        }
        failures.push(format!("the VMs {reason}"));
    }

    // The host's end, then everybody's (lava-wait-for-vms).
    // After a failed host test the VMs most likely wait for a host that will not answer:
    // they get a short grace, then are killed (and reported failed).
    let waiter = shared.host(match host_failure {
        Some(_) => HOST_FAILED_GRACE.min(opts.timeout),
        None => opts.timeout,
    });
    log.say("waiting for every member's end (lava-wait-for-vms)");
    let waited = vm::stop(&waiter, host_failure.as_deref())
        .and_then(|first_class| vm::wait_all_stopped(&waiter, first_class));
    let stop_data = match waited {
        Ok((message, failed)) => {
            if failed.is_empty() {
                log.say("every member reported status=ok");
            } else {
                let text =
                    vm::failure_text(&failed, &message, message.as_object().map(|m| m.len()));
                log.say(&text);
                failures.push(text);
            }
            Some(message)
        }
        Err(e) => {
            log.say(&format!("lava-wait-for-vms failed: {e}; killing the VMs"));
            shared.running.kill_all();
            failures.push(format!("waiting for the VMs: {e}"));
            None
        }
    };

    // Every VM process must be gone before the after steps.
    drop(tx);
    let deadline = Instant::now() + END_GRACE;
    while reports.len() < vm_threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Vm(r)) => reports.push(r),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log.say(&format!(
                    "VMs still running {} s after the group ended: killing them",
                    END_GRACE.as_secs()
                ));
                shared.running.kill_all();
                // Killed consoles end at once; their threads then report.
                while reports.len() < vm_threads.len() {
                    match rx.recv_timeout(CALL_TIMEOUT * 2) {
                        Ok(Event::Vm(r)) => reports.push(r),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for t in vm_threads {
        let _ = t.join();
    }

    // The host's further test shells, once every VM has closed (the seed's second host
    // test shell).
    for shell in host_shells.iter().skip(1) {
        if timed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            break;
        }
        host::run_shell(&shared, shell, &host_results);
    }
    for cmd in &opts.after {
        match run_after(&shared, cmd) {
            None => log.say("after step passed"),
            Some(f) => {
                log.say(&f);
                failures.push(f);
            }
        }
    }

    if let Some(remote) = &opts.job.host_ssh {
        let dir = Remote::dir(&opts.group);
        if let Err(e) = remote.run(&format!("rm -rf {}", remote::quote(&dir))) {
            log.say(&format!("cannot remove {dir} on the host: {e}"));
        }
    }

    // The group is over: free it on the coordinator (every member clears).
    for node in &nodes {
        let s = shared.session(&node.client, &node.role, Duration::from_secs(5));
        if let Err(e) = s.call(RequestKind::ClearGroup) {
            log.say(&format!("clear_group as {}: {e}", node.client));
            break;
        }
    }

    reports.sort_by_key(|r| nodes.iter().position(|n| n.client == r.client));
    let mut rows = Vec::new();
    for r in &reports {
        let booted = r
            .booted_after
            .map(|b| format!("booted in {:.1} s, ", b.as_secs_f64()))
            .unwrap_or_default();
        let status = match (&r.launcher_failure, &stop_data) {
            (Some(f), _) => format!("failed ({f})"),
            (None, Some(data)) => data[r.client.as_str()]["status"]
                .as_str()
                .unwrap_or("ok")
                .to_owned(),
            (None, None) => "unknown".to_owned(),
        };
        rows.push(super::report::NodeRow::of(r, status.clone()));
        log.say(&format!(
            "{} ({}): {status}; {booted}ran {:.1} s; console {}",
            r.client,
            r.role,
            r.ran.as_secs_f64(),
            r.log.display()
        ));
    }
    let mut results = host_results
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .results()
        .to_vec();
    for r in &reports {
        results.extend(r.results.iter().cloned());
    }
    if let Some(f) = report_results(&shared, &results) {
        failures.push(f);
    }
    if let Some(why) = timed_out.lock().unwrap_or_else(|e| e.into_inner()).take() {
        failures.insert(0, why);
    }
    write_report(&shared, &rows, &results, &failures);
    if failures.is_empty() {
        log.say("VM group passed");
        Ok(())
    } else {
        Err(Error::Negative(format!(
            "VM group failed: {}",
            failures.join("; ")
        )))
    }
}
