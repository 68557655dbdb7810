//! Helpers of the VM group tests (`tests/tests/vm_groups.rs`): the test guest that
//! `packaging/vm-guest/build.sh` builds, job definitions with qemu guests or with shell
//! scripts that play a guest, and the launcher (`lava-multinode vm-group run`) as a process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{bin, workspace_root, TempDir};

/// Set to `1` (the CI script does) to make a missing qemu or test guest a failure instead of a
/// skipped test.
pub const REQUIRE_VM_ENV: &str = "LAVA_MULTINODE_REQUIRE_VM";

pub fn vm_required() -> bool {
    std::env::var(REQUIRE_VM_ENV).is_ok_and(|v| v == "1")
}

pub const QEMU: &str = "qemu-system-x86_64";
/// The prompt marker the test guest's /init prints.
pub const GUEST_PROMPT: &str = "lava-guest# ";
/// root's password in the test guest (`lava_multinode.console=login`).
pub const GUEST_PASSWORD: &str = "lava";

/// Where `packaging/vm-guest/build.sh` writes the guest: `$LAVA_VM_GUEST_DIR` (the same
/// variable as the build script's), else `target/vm-guest`.
pub fn guest_dir() -> PathBuf {
    match std::env::var_os("LAVA_VM_GUEST_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("vm-guest"),
    }
}

/// The test guest's kernel and initramfs.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The static `lava-multinode` that `packaging/vm-guest/build.sh` packs
/// (`$LAVA_VM_GUEST_TOOLS`, as for the script).
fn static_tools() -> PathBuf {
    match std::env::var_os("LAVA_VM_GUEST_TOOLS") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join("dist/x86_64-unknown-linux-musl/lava-multinode"),
    }
}

/// Why the guest cannot run here, after one attempt to build it or bring it up to date
/// (`None`: it can).
fn unavailable() -> Option<String> {
    static BUILT: OnceLock<Option<String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !in_path(QEMU) {
                return Some(format!(
                    "{QEMU} is not installed (apt-get install qemu-system-x86)"
                ));
            }
            let dir = guest_dir();
            let built = dir.join("vmlinuz").exists() && dir.join("initrd.gz").exists();
            if built && static_tools().is_file() {
                // Bring an older guest up to date (new guest tests, init, tools): the script
                // does nothing when its inputs are unchanged. On failure the guest there is
                // used as it is.
                let out = Command::new("sh")
                    .arg(workspace_root().join("packaging/vm-guest/build.sh"))
                    .stdin(Stdio::null())
                    .output();
                if let Some(o) = out.ok().filter(|o| !o.status.success()) {
                    eprintln!(
                        "NOTICE: packaging/vm-guest/build.sh failed, using the guest in {}: {}",
                        dir.display(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                }
            }
            if !built {
                // Try to build it (needs Debian's package lists and busybox-static).
                let out = Command::new("sh")
                    .arg(workspace_root().join("packaging/vm-guest/build.sh"))
                    .stdin(Stdio::null())
                    .output();
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => {
                        return Some(format!(
                        "the test guest is not built and packaging/vm-guest/build.sh failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                    }
                    Err(e) => return Some(format!("cannot run packaging/vm-guest/build.sh: {e}")),
                }
            }
            None
        })
        .clone()
}

/// The test guest, or `None` after printing why the test is skipped; with
/// `LAVA_MULTINODE_REQUIRE_VM=1` a missing qemu or guest fails the test instead.
pub fn guest_or_skip(test: &str) -> Option<Guest> {
    match unavailable() {
        None => Some(Guest {
            kernel: guest_dir().join("vmlinuz"),
            initrd: guest_dir().join("initrd.gz"),
        }),
        Some(why) if vm_required() => {
            panic!("{test}: {why} ({REQUIRE_VM_ENV}=1 makes this a failure)")
        }
        Some(why) => {
            eprintln!("NOTICE: skipping {test}: {why} (set {REQUIRE_VM_ENV}=1 to fail instead)");
            None
        }
    }
}

/// qemu guests of one test binary run one group at a time: two guests per core are
/// what the 30 s budget is measured with.
pub fn qemu_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `launch_with` command of a qemu test guest running guest test `test`
/// (`packaging/vm-guest/tests/TEST.sh`). qemu writes its pid to `{log_dir}/{client}.pid`
/// so that a test that fails can kill it.
pub fn qemu_command(guest: &Guest, test: &str) -> String {
    format!(
        "exec {QEMU} -name {{client}} -M q35 -accel tcg -m 256 -nographic -no-reboot \
         -pidfile {{log_dir}}/{{client}}.pid \
         -kernel {} -initrd {{image}} \
         -append 'console=ttyS0 quiet lava_multinode.test={test} lava_multinode.timeout=60 {{kernel_cmdline}}' \
         -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=",
        guest.kernel.display()
    )
}

/// The `launch_with` command of a qemu test guest with no network device (`-nic none`,
/// `lava_multinode.net=none`) whose tools use the console transport
/// (`lava_multinode.transport=console`): it takes part through its console only, which the
/// launcher relays. Otherwise as [`qemu_command`].
pub fn qemu_console_command(guest: &Guest, test: &str) -> String {
    qemu_console_command_with(guest, &format!("lava_multinode.test={test}"))
}

/// [`qemu_console_command`] with the guest's kernel parameters `params` instead of a test
/// (e.g. `lava_multinode.console=login`).
pub fn qemu_console_command_with(guest: &Guest, params: &str) -> String {
    format!(
        "exec {QEMU} -name {{client}} -M q35 -accel tcg -m 256 -nographic -no-reboot \
         -pidfile {{log_dir}}/{{client}}.pid \
         -kernel {} -initrd {{image}} \
         -append 'console=ttyS0 quiet {params} lava_multinode.net=none \
         lava_multinode.transport=console lava_multinode.timeout=60 {{kernel_cmdline}}' \
         -nic none",
        guest.kernel.display()
    )
}

/// A `vms[]` entry: a qemu test guest of `role` running guest test `test`.
pub fn qemu_vm(guest: &Guest, role: &str, test: &str) -> Value {
    vm_entry(guest, role, qemu_command(guest, test))
}

/// A `vms[]` entry: a qemu test guest of `role` without a network device, running guest test
/// `test` with the tools on the console ([`qemu_console_command`]).
pub fn qemu_console_vm(guest: &Guest, role: &str, test: &str) -> Value {
    vm_entry(guest, role, qemu_console_command(guest, test))
}

/// A `vms[]` entry: a qemu test guest of `role` without a network device whose console offers
/// a login (`lava_multinode.console=login`: root, password lava); the launcher logs in
/// (`auto_login`) and types `commands` (`console_commands`) at the shell prompt.
pub fn qemu_login_vm(guest: &Guest, role: &str, commands: &[&str]) -> Value {
    let mut vm = vm_entry(
        guest,
        role,
        qemu_console_command_with(guest, "lava_multinode.console=login"),
    );
    vm["auto_login"] = json!({
        "login_prompt": "login: ",
        "username": "root",
        "password_prompt": "Password: ",
        "password": GUEST_PASSWORD,
    });
    vm["console_commands"] = json!(commands);
    vm
}

/// A `vms[]` entry: a qemu test guest of `role` without a network device whose console offers
/// a root shell (`lava_multinode.console=shell`); the launcher types `commands`
/// (`console_commands`) at its prompt.
pub fn qemu_shell_vm(guest: &Guest, role: &str, commands: &[&str]) -> Value {
    let mut vm = vm_entry(
        guest,
        role,
        qemu_console_command_with(guest, "lava_multinode.console=shell"),
    );
    vm["console_commands"] = json!(commands);
    vm
}

fn vm_entry(guest: &Guest, role: &str, command: String) -> Value {
    json!({
        "device_type": "qemu",
        "role": role,
        "image": guest.initrd.display().to_string(),
        "shell_prompt": GUEST_PROMPT,
        "launch_with": [command],
    })
}

/// A `vms[]` entry whose "VM" is `sh SCRIPT`: a process that plays a guest. It gets its
/// identity as a real guest does, from a kernel command line (`{kernel_cmdline}`, written to
/// `{log_dir}/{client}.cmdline` by a first command and named by `LAVA_MULTINODE_CMDLINE`), and
/// the lava-* tools of the launcher's `{log_dir}/bin`.
pub fn script_vm(role: &str, count: u32, script: &Path, prompt: Option<&str>) -> Value {
    let mut vm = json!({
        "device_type": "process",
        "role": role,
        "count": count,
        "launch_with": [
            "echo '{kernel_cmdline} lava_multinode.timeout=30' > {log_dir}/{client}.cmdline",
            format!(
                "PATH={{log_dir}}/bin:$PATH LAVA_MULTINODE_CMDLINE={{log_dir}}/{{client}}.cmdline \
                 LAVA_MULTINODE_CONF= LAVA_MULTI_NODE_CACHE={{log_dir}}/{{client}}.cache \
                 exec sh {}",
                script.display()
            ),
        ],
    });
    if let Some(p) = prompt {
        vm["shell_prompt"] = json!(p);
    }
    vm
}

/// A job definition with host role `host`.
pub fn job(auto_start: Option<bool>, vms: Vec<Value>) -> Value {
    let mut vg = json!({
        "host": {"device_type": "x86_64", "role": "host"},
        "vms": vms,
    });
    if let Some(a) = auto_start {
        vg["auto_start_vms"] = json!(a);
    }
    json!({"job_name": "vm group test", "vm_group": vg})
}

/// What a launcher run gave.
#[derive(Debug)]
pub struct LauncherRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl LauncherRun {
    /// Both outputs, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }

    /// The position of the first stderr line holding `needle`.
    #[track_caller]
    pub fn line_of(&self, needle: &str) -> usize {
        self.stderr
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", self.text()))
    }
}

/// A launcher: `lava-multinode vm-group run JOB` with its own scratch folder (job file, logs).
pub struct Launcher {
    pub dir: TempDir,
    pub coordinator: String,
    pub group: String,
    /// `None`: the launcher's default (host_ip of the coordinator's address for the guests).
    pub guest_coordinator: Option<String>,
    pub boot_timeout: f64,
    pub timeout: f64,
    pub after: Vec<String>,
    pub cwd: PathBuf,
}

impl Launcher {
    pub fn new(coordinator: &str, tag: &str) -> Launcher {
        let dir = TempDir::new("vm-group");
        let group = format!(
            "vmtest-{tag}-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .rsplit('-')
                    .next()
                    .unwrap_or("0")
                    .to_owned())
                .unwrap_or_default()
        );
        Launcher {
            dir,
            coordinator: coordinator.to_owned(),
            group,
            guest_coordinator: None,
            boot_timeout: 60.0,
            timeout: 60.0,
            after: Vec::new(),
            cwd: workspace_root(),
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// A VM's console log.
    pub fn console(&self, client: &str) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("{client}.log"))).unwrap_or_default()
    }

    /// The launcher's command for `job` with `action` (`run`, `show`) and host test `test`.
    pub fn command(&self, action: &str, job: &Value, test: &[&str]) -> Command {
        let job_path = self.dir.path().join("job.json");
        std::fs::write(&job_path, serde_json::to_string_pretty(job).unwrap())
            .expect("write job file");
        let mut cmd = Command::new(bin("lava-multinode"));
        cmd.arg("vm-group")
            .arg(action)
            .arg(&job_path)
            .args(["--coordinator", &self.coordinator, "--group", &self.group])
            .arg("--log-dir")
            .arg(self.log_dir())
            .args(["--boot-timeout", &self.boot_timeout.to_string()])
            .args(["--timeout", &self.timeout.to_string()]);
        if let Some(g) = &self.guest_coordinator {
            cmd.args(["--guest-coordinator", g]);
        }
        for a in &self.after {
            cmd.args(["--after", a]);
        }
        if !test.is_empty() {
            cmd.arg("--").args(test);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAVA_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("LAVA_MULTINODE_CMDLINE", "/nonexistent/cmdline")
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the launcher to its end; killed (with its VMs) after `limit`.
    pub fn run(&self, job: &Value, test: &[&str], limit: Duration) -> LauncherRun {
        use std::os::unix::process::CommandExt;
        let started = Instant::now();
        let out_path = self.dir.path().join("stdout");
        let err_path = self.dir.path().join("stderr");
        let mut cmd = self.command("run", job, test);
        cmd.stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .process_group(0);
        let mut child = Guard(
            Some(cmd.spawn().expect("spawn lava-multinode vm-group")),
            self,
        );
        let code = loop {
            if let Some(status) = child.0.as_mut().unwrap().try_wait().expect("wait") {
                child.0 = None;
                break status.code().unwrap_or(-1);
            }
            if started.elapsed() > limit {
                drop(child);
                panic!(
                    "the launcher did not end within {} s; stderr:\n{}",
                    limit.as_secs(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        LauncherRun {
            code,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// Kills what a failed test left: the launcher's process group, and the qemu processes
    /// whose pid files are in the log folder.
    fn kill_leftovers(&self, child: Option<&mut Child>) {
        if let Some(child) = child {
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.wait();
        }
        if let Ok(entries) = std::fs::read_dir(self.log_dir()) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid") {
                    if let Ok(pid) = std::fs::read_to_string(e.path()) {
                        let pid = pid.trim();
                        // Only a qemu we started: its command line names our log folder.
                        let cmdline =
                            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let ours = String::from_utf8_lossy(&cmdline)
                            .contains(&self.log_dir().display().to_string());
                        if ours {
                            let _ = Command::new("kill").args(["-s", "KILL", pid]).status();
                        }
                    }
                }
            }
        }
    }
}

/// Kills the launcher and its VMs when a test panics while it runs.
struct Guard<'a>(Option<Child>, &'a Launcher);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            self.1.kill_leftovers(Some(&mut child));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.kill_leftovers(None);
    }
}
