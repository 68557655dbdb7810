//! Helpers of the target tools' process tests (`tests/tests/tools.rs`): install the
//! `lava-*` links of a `lava-multinode` binary (the debug build, or a static build from
//! `dist/`, possibly run under qemu-user) in a scratch folder, and run them as the nodes of a
//! group, with a clean environment that points every configuration source at scratch files.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{bin, workspace_root, TempDir};

/// `dist/<triple>/lava-multinode`, as `packaging/build-static.sh` writes it.
pub fn static_binary(triple: &str) -> PathBuf {
    workspace_root()
        .join("dist")
        .join(triple)
        .join("lava-multinode")
}

/// Set to `1` (the CI script does, after building the static binaries) to make a missing
/// static binary or qemu a failure instead of a skipped part.
pub const REQUIRE_STATIC_ENV: &str = "LAVA_MULTINODE_REQUIRE_STATIC";

pub fn static_required() -> bool {
    std::env::var(REQUIRE_STATIC_ENV).is_ok_and(|v| v == "1")
}

pub const QEMU_AARCH64: &str = "/usr/bin/qemu-aarch64-static";
pub const QEMU_ARM: &str = "/usr/bin/qemu-arm-static";

/// The static builds that `packaging/build-static.sh` makes, each with the emulator that runs
/// it here (`None`: natively on x86_64).
pub const STATIC_BUILDS: &[(&str, Option<&str>)] = &[
    ("x86_64-unknown-linux-musl", None),
    ("aarch64-unknown-linux-musl", Some(QEMU_AARCH64)),
    ("armv7-unknown-linux-musleabihf", Some(QEMU_ARM)),
];

/// The size a static build must stay under (`LAVA_MULTINODE_MAX_SIZE` of build-static.sh).
pub const STATIC_MAX_BYTES: u64 = 1024 * 1024;

/// A folder of `lava-*` links to one `lava-multinode` binary, and how to run them.
pub struct Tools {
    dir: TempDir,
    binary: PathBuf,
    /// An emulator to run the binary under (`qemu-aarch64-static`, `qemu-arm-static`).
    runner: Option<PathBuf>,
}

impl Tools {
    /// The workspace's debug build (`cargo build -p lava-multinode`).
    pub fn native() -> Tools {
        Tools::new(bin("lava-multinode"), None)
    }

    /// `binary` run directly, or under `runner`; the links are made by the binary's own
    /// `install` command.
    pub fn new(binary: PathBuf, runner: Option<PathBuf>) -> Tools {
        let tools = Tools {
            dir: TempDir::new("tools"),
            binary,
            runner,
        };
        let out = tools
            .raw(
                &tools.binary,
                &["install", &tools.dir.path().display().to_string()],
            )
            .output()
            .expect("run lava-multinode install");
        assert!(
            out.status.success(),
            "lava-multinode install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tools
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The link of `tool` (`lava-send`).
    pub fn link(&self, tool: &str) -> PathBuf {
        self.dir.path().join(tool)
    }

    fn raw(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = match &self.runner {
            // qemu-user gives the guest the path it was given as argv[0].
            Some(runner) => {
                let mut c = Command::new(runner);
                c.arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null());
        // Nothing from the test's own environment leaks into the tools.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAVA_") {
                cmd.env_remove(name);
            }
        }
        cmd
    }

    /// `tool` (a link name, or `lava-multinode`) with `args`, in a clean environment.
    pub fn command(&self, tool: &str, args: &[&str]) -> Command {
        let program = if tool == "lava-multinode" {
            self.binary.clone()
        } else {
            self.link(tool)
        };
        self.raw(&program, args)
    }
}

/// What a tool run gave.
#[derive(Debug, Clone)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The command line, for assertion messages.
    pub what: String,
}

impl Run {
    fn from(output: Output, elapsed: Duration, what: String) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
            what,
        }
    }

    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "{} exited {}; stderr: {}; stdout: {}",
            self.what, self.code, self.stderr, self.stdout
        );
        &self.stdout
    }

    /// Asserts exit `code` with exactly one line on stderr and returns that line.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "{} exited {} (expected {code}); stderr: {}; stdout: {}",
            self.what, self.code, self.stderr, self.stdout
        );
        let line = self.stderr.trim_end_matches('\n');
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "{}: expected one line on stderr, got {:?}",
            self.what,
            self.stderr
        );
        line
    }

    /// Stdout lines, sorted (for data whose order the coordinators may differ on).
    pub fn sorted_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.stdout.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }
}

/// One node of a group: its settings as environment variables and its own cache file.
pub struct Node<'a> {
    pub tools: &'a Tools,
    pub client: String,
    pub role: String,
    pub cache: PathBuf,
    env: Vec<(String, String)>,
    _scratch: TempDir,
}

/// Settings shared by the nodes of a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub coordinator: String,
    pub group: String,
    /// `None`: the nodes do not know it (e.g. VM guests under a declared roster).
    pub group_size: Option<u32>,
    pub timeout: f64,
    pub poll: f64,
}

impl GroupConfig {
    pub fn new(coordinator: &str, group: &str, size: u32) -> Self {
        GroupConfig {
            coordinator: coordinator.to_owned(),
            group: group.to_owned(),
            group_size: Some(size),
            timeout: 60.0,
            poll: 0.2,
        }
    }
}

impl<'a> Node<'a> {
    /// A node of `group` called `client` with role `role`. The configuration file and the
    /// kernel command line point at empty scratch files.
    pub fn new(tools: &'a Tools, group: &GroupConfig, client: &str, role: &str) -> Node<'a> {
        let scratch = TempDir::new("node");
        let conf = scratch.path().join("lava-multinode.conf");
        let cmdline = scratch.path().join("cmdline");
        std::fs::write(&conf, "").expect("write empty conf");
        std::fs::write(&cmdline, "").expect("write empty cmdline");
        let cache = scratch.path().join("cache.txt");
        let mut env = vec![
            ("LAVA_MULTINODE_COORDINATOR", group.coordinator.clone()),
            ("LAVA_MULTINODE_GROUP", group.group.clone()),
            ("LAVA_MULTINODE_CLIENT", client.to_owned()),
            ("LAVA_MULTINODE_ROLE", role.to_owned()),
            ("LAVA_MULTINODE_TIMEOUT", group.timeout.to_string()),
            ("LAVA_MULTINODE_POLL", group.poll.to_string()),
            ("LAVA_MULTI_NODE_CACHE", cache.display().to_string()),
            ("LAVA_MULTINODE_CONF", conf.display().to_string()),
            ("LAVA_MULTINODE_CMDLINE", cmdline.display().to_string()),
        ];
        if let Some(size) = group.group_size {
            env.push(("LAVA_MULTINODE_GROUP_SIZE", size.to_string()));
        }
        Node {
            tools,
            client: client.to_owned(),
            role: role.to_owned(),
            cache,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            _scratch: scratch,
        }
    }

    /// Sets (or, with `None`, removes) an environment variable of this node's runs.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.env.push((name.to_owned(), v.to_owned()));
        }
    }

    /// This node's configuration file (empty unless a test writes it).
    pub fn conf_file(&self) -> PathBuf {
        self._scratch.path().join("lava-multinode.conf")
    }

    /// This node's kernel command line file.
    pub fn cmdline_file(&self) -> PathBuf {
        self._scratch.path().join("cmdline")
    }

    pub fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut cmd = self.tools.command(tool, args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `tool args` to its end.
    pub fn run(&self, tool: &str, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        Run::from(
            output,
            started.elapsed(),
            format!("[{}] {tool} {}", self.client, args.join(" ")),
        )
    }

    /// Starts `tool args` in the background.
    pub fn spawn(&self, tool: &str, args: &[&str]) -> Spawned {
        let child = self
            .command(tool, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        Spawned {
            child: Some(child),
            started: Instant::now(),
            what: format!("[{}] {tool} {}", self.client, args.join(" ")),
        }
    }

    /// The cache file's content (`None` when it does not exist).
    pub fn cache_text(&self) -> Option<String> {
        std::fs::read_to_string(&self.cache).ok()
    }

    /// Starts `tool args` with pipes for standard input and output, the test playing the
    /// relay of the console transport: it reads the marker from the tool's output and
    /// writes the reply line to its input.
    pub fn console(&self, tool: &str, args: &[&str]) -> ConsoleRun {
        let mut child = self
            .command(tool, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        ConsoleRun {
            child: Some(child),
            stdin,
            lines,
            seen: String::new(),
            errors: Some(errors),
            started: Instant::now(),
            what: format!("[{}] {tool} {} (console)", self.client, args.join(" ")),
        }
    }
}

/// A tool running over the console transport, its standard input and output in the test's
/// hands ([`Node::console`]); killed if dropped before [`ConsoleRun::finish`].
pub struct ConsoleRun {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything read from its standard output so far.
    seen: String,
    errors: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    what: String,
}

impl ConsoleRun {
    /// The next line the tool printed (without its line end), waiting 10 s at most.
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: no line on stdout ({e})", self.what));
        self.seen.push_str(&line);
        line.trim_end_matches('\n').to_owned()
    }

    /// Types `text` on the tool's standard input.
    pub fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("standard input still open");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the tool's stdin");
    }

    /// Closes the tool's standard input (the console closes).
    pub fn close(&mut self) {
        self.stdin = None;
    }

    /// Waits for the tool's end; the run's stdout is everything it printed.
    pub fn finish(mut self) -> Run {
        let mut child = self.child.take().expect("not finished yet");
        let status = child.wait().expect("wait for tool");
        self.stdin = None;
        // The reader ends at the end of the output.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push_str(&line);
        }
        let stderr = self
            .errors
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: std::mem::take(&mut self.seen),
            stderr,
            elapsed: self.started.elapsed(),
            what: self.what.clone(),
        }
    }
}

impl Drop for ConsoleRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tool running in the background; killed if dropped before [`Spawned::wait`].
pub struct Spawned {
    child: Option<Child>,
    started: Instant,
    what: String,
}

impl Spawned {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn wait(mut self) -> Run {
        let child = self.child.take().expect("not waited yet");
        let output = child.wait_with_output().expect("wait for tool");
        Run::from(output, self.started.elapsed(), self.what.clone())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The exit status of a tool whose request the coordinator refused, or that needs a feature the
/// coordinator (or the transport) does not have.
pub const NACK_EXIT: i32 = 4;

/// Each call is one of our extensions: against LAVA's own coordinator (`lava`) it exits
/// [`NACK_EXIT`] saying it needs this project's coordinator; over the console (`console`, where
/// only LAVA's MultiNode API passes) it exits the same way saying it needs ours over TCP.
pub fn assert_extensions_need_ours(
    tools: &Tools,
    lava: &[(&str, &[&str])],
    console: &[(&str, &[&str])],
) {
    let reference = crate::start_reference();
    let node = Node::new(
        tools,
        &GroupConfig::new(&reference.addr, "lava", 1),
        "a",
        "r",
    );
    for (tool, args) in lava {
        let err = node.run(tool, args).fails(NACK_EXIT).to_owned();
        assert!(
            err.contains("needs this project's lava-coordinator"),
            "{tool} {args:?}: {err}"
        );
    }
    let mut over_console = Node::new(
        tools,
        &GroupConfig::new("127.0.0.1:1", "unused", 1),
        "a",
        "r",
    );
    over_console.set_env("LAVA_MULTINODE_TRANSPORT", Some("console"));
    for (tool, args) in console {
        let err = over_console.run(tool, args).fails(NACK_EXIT).to_owned();
        assert!(
            err.contains("needs our coordinator over TCP"),
            "{tool} {args:?}: {err}"
        );
    }
}
