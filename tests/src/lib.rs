//! Helpers shared by the process-level and interop tests: locate the workspace's binaries,
//! start our coordinator or Debian's reference on a free loopback port, and stop them.
//!
//! `cargo test --workspace` builds every binary of the workspace before it runs any test, so
//! the binaries are found next to the test executable's `deps/` folder.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod bench;
pub mod browser;
pub mod interop;
pub mod net;
pub mod packaging;
pub mod tools;
pub mod vm;

/// The Cargo workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>`: the folder that holds the workspace's binaries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test-binary>
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// Path of a workspace binary (`lava-coordinator`, `lava-multinode`).
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on loopback")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server process that is killed when dropped.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub port: u16,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait for killed server");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A protocol client for this server.
    pub fn client(&self) -> lava_protocol::Client {
        lava_protocol::Client::new(self.addr.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts our `lava-coordinator` on a free loopback port with `extra` arguments.
pub fn start_coordinator(extra: &[&str]) -> Server {
    start_coordinator_with_config(None, extra)
}

/// Starts a server on a free loopback port: `command(port, dir)` builds its command line (its
/// log goes to `dir/server.log`), and it is ready once `ready` says so. A port taken by
/// something else in the meantime costs another try on another port.
fn start_on_free_port(
    tag: &str,
    command: impl Fn(u16, &Path) -> Command,
    ready: impl Fn(&Server) -> bool,
) -> Server {
    let mut last_log = String::new();
    for _ in 0..5 {
        let dir = TempDir::new(tag);
        let port = free_port();
        let child = command(port, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
        let mut server = Server {
            child,
            addr: format!("127.0.0.1:{port}"),
            port,
            log: dir.path().join("server.log"),
            _dir: dir,
        };
        if wait_for_port(&server.addr, Duration::from_secs(10))
            && server.is_running()
            && ready(&server)
        {
            return server;
        }
        last_log = server.log_text();
    }
    panic!("{tag} did not start:\n{last_log}");
}

/// Starts our `lava-coordinator` with `config` (JSON text) as its configuration file.
pub fn start_coordinator_with_config(config: Option<&str>, extra: &[&str]) -> Server {
    start_on_free_port(
        "coordinator",
        |port, dir| {
            let conf = dir.join("lava-coordinator.conf");
            if let Some(config) = config {
                std::fs::write(&conf, config).expect("write coordinator config");
            }
            let mut cmd = Command::new(bin("lava-coordinator"));
            cmd.args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--loglevel",
                "DEBUG",
            ])
            .arg("--logfile")
            .arg(dir.join("server.log"))
            .arg("--config")
            .arg(&conf)
            .arg("--state")
            .arg(dir.join("state.db"))
            .args(extra)
            .stderr(Stdio::inherit());
            cmd
        },
        |_| true,
    )
}

/// Debian's reference coordinator, when the `lava-coordinator` package is installed.
pub const REFERENCE_BIN: &str = "/usr/bin/lava-coordinator";

/// Debian's Python, which sees Debian's LAVA modules (a `python3` earlier on `PATH` may not).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn reference_available() -> bool {
    Path::new(REFERENCE_BIN).exists()
        && Path::new("/usr/lib/python3/dist-packages/lava/coordinator/__init__.py").exists()
}

/// Starts Debian's reference coordinator on a free port with exactly the command line its
/// package knows (it binds 0.0.0.0; we talk to it over 127.0.0.1 only).
pub fn start_reference() -> Server {
    assert!(
        reference_available(),
        "Debian's lava-coordinator is not installed: `apt-get install lava-coordinator` (.ci/run does)"
    );
    start_on_free_port(
        "reference",
        |port, dir| {
            let conf = dir.join("lava-coordinator.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"{{"port": {port}, "blocksize": 4096, "poll_delay": 1, "coordinator_hostname": "127.0.0.1"}}"#
                ),
            )
            .expect("write reference config");
            let mut cmd = Command::new(SYSTEM_PYTHON);
            cmd.arg(REFERENCE_BIN)
                .arg("--config")
                .arg(&conf)
                .arg("--logfile")
                .arg(dir.join("server.log"))
                .args(["--loglevel", "DEBUG"])
                .stderr(Stdio::null());
            cmd
        },
        // It logs a failed bind and retries in the background: then something else holds
        // the port (and answered the port check).
        |server| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let log = server.log_text();
                if log.contains("Unable to bind") {
                    return false;
                }
                if log.contains("Ready to accept") {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        },
    )
}

/// A scratch folder removed on drop (std only).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "lava-mn-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends raw bytes on one connection, half-closes, and returns whatever came back
/// (used by the bad-input tests, which send what no well-behaved client would).
pub fn raw_exchange(addr: &str, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(bytes)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// How long the tests wait for the coordinator to reach a state they expect (a request held,
/// a group gone): generous, since it only bounds a failure on a loaded machine.
pub const STATE_DEADLINE: Duration = Duration::from_secs(10);

/// The coordinator's status view: the answer to the `status` request (what
/// `lava-coordinator status --json` prints), for every group or only `group`. `Err` says why
/// there is none (not reachable, no reply, refused: e.g. a `group` it does not have).
pub fn coordinator_status(addr: &str, group: Option<&str>) -> Result<serde_json::Value, String> {
    let mut request = serde_json::json!({"request": "status"});
    if let Some(group) = group {
        request["group"] = group.into();
    }
    let body = lava_protocol::Client::new(addr)
        .with_connect_timeout(Duration::from_secs(2))
        .call_raw(&request.to_string(), None)
        .map_err(|e| format!("status request to {addr}: {e}"))?
        .ok_or_else(|| format!("status request to {addr}: closed without a reply"))?;
    let reply: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("status reply {body:.200}: {e}"))?;
    if reply["response"] != "status" {
        return Err(format!("status request answered {reply}"));
    }
    Ok(reply)
}

/// The `blocked` entries of `group` in a status view: (client, what it waits for).
pub fn held_requests(status: &serde_json::Value, group: &str) -> Vec<(String, String)> {
    let groups = status["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    groups
        .iter()
        .filter(|g| g["name"] == group)
        .flat_map(|g| g["blocked"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&b["client"]), text(&b["waits_for"]))
        })
        .collect()
}

/// Polls the coordinator's status view (of `group`, or of all groups) every few milliseconds
/// until `holds` says yes, and returns that view. Panics after `deadline`, naming `what` was
/// awaited and the last status seen. This is how the tests wait for the coordinator to reach a
/// state, instead of sleeping and hoping that it has.
#[track_caller]
pub fn wait_for_status(
    addr: &str,
    group: Option<&str>,
    what: &str,
    deadline: Duration,
    holds: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let last = coordinator_status(addr, group);
        if let Ok(status) = &last {
            if holds(status) {
                return status.clone();
            }
        }
        if started.elapsed() > deadline {
            let last = match last {
                Ok(status) => serde_json::to_string_pretty(&status).unwrap_or_default(),
                Err(e) => e,
            };
            panic!("after {deadline:?} the coordinator at {addr} still not: {what}; last status:\n{last}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the coordinator at `addr` holds a request of `client` in `group` that waits
/// for `waits_for`, as its status view words it (`lava_wait go`, `lava_wait_all all`,
/// `lava_sync s`, `group_data (every member registered)`): the request has arrived and is
/// blocked on what the test expects. Panics after `deadline` with the last status seen.
#[track_caller]
pub fn wait_until_held(addr: &str, group: &str, client: &str, waits_for: &str, deadline: Duration) {
    wait_for_status(
        addr,
        Some(group),
        &format!("holding {client}'s {waits_for} in group {group}"),
        deadline,
        |status| {
            held_requests(status, group)
                .iter()
                .any(|(c, w)| c == client && w == waits_for)
        },
    );
}

/// Waits until the coordinator at `addr` holds no request of `client` in `group` (its held
/// request has been answered, or the group is gone). Panics after `deadline` with the last
/// status seen.
#[track_caller]
pub fn wait_until_not_held(addr: &str, group: &str, client: &str, deadline: Duration) {
    wait_for_status(
        addr,
        None,
        &format!("holding no request of {client} in group {group}"),
        deadline,
        |status| {
            !held_requests(status, group)
                .iter()
                .any(|(c, _)| c == client)
        },
    );
}
