//! Helpers of the interop tests with Debian's real LAVA pieces (`tests/tests/interop.rs`):
//! run LAVA's own `MultinodeProtocol` client as a node of a group (through
//! `tests/interop/lava_client.py`), and send scripted request sequences, one request at a time,
//! to the reference coordinator and to ours.
//!
//! The Debian pieces are installed by `tests/interop/install.sh`; when they are missing the
//! tests fail (they never skip) and say so.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::workspace_root;

/// Where `install.sh` extracts lava-dispatcher unless this variable says otherwise.
pub const CLIENT_DIR_ENV: &str = "LAVA_DISPATCHER_CLIENT_DIR";
pub const DEFAULT_CLIENT_DIR: &str = "/opt/lava-dispatcher-client";
/// Debian's Python: the LAVA modules are installed for it (a `python3` earlier on PATH, e.g.
/// pyenv's, does not see them).
pub use crate::SYSTEM_PYTHON;

/// The folder the lava-dispatcher package was extracted into.
pub fn client_dir() -> PathBuf {
    std::env::var_os(CLIENT_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLIENT_DIR))
}

/// `PYTHONPATH` under which `lava_dispatcher` imports.
pub fn client_pythonpath() -> PathBuf {
    client_dir().join("usr/lib/python3/dist-packages")
}

/// `tests/interop/lava_client.py`.
pub fn driver_script() -> PathBuf {
    workspace_root().join("tests/interop/lava_client.py")
}

/// `tests/interop/install.sh`.
pub fn install_script() -> PathBuf {
    workspace_root().join("tests/interop/install.sh")
}

fn check_debian_pieces() -> Result<(), String> {
    if !std::path::Path::new(SYSTEM_PYTHON).exists() {
        return Err(format!("{SYSTEM_PYTHON} is missing"));
    }
    if !crate::reference_available() {
        return Err(format!(
            "Debian's reference coordinator ({}) is not installed",
            crate::REFERENCE_BIN
        ));
    }
    let out = Command::new(SYSTEM_PYTHON)
        .env("PYTHONPATH", client_pythonpath())
        .args([
            "-c",
            "from lava_dispatcher.protocols.multinode import MultinodeProtocol",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {SYSTEM_PYTHON}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "LAVA's MultinodeProtocol does not import from {} ({}): {}",
            client_pythonpath().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// Fails the calling test, with what to do, unless Debian's reference coordinator and the
/// real LAVA client are installed. Checked once per test process.
pub fn require_debian_pieces() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(check_debian_pieces) {
        panic!(
            "interop tests need Debian's LAVA pieces: {why}.\n\
             Install them with `sudo {}` (idempotent; set {CLIENT_DIR_ENV} to extract \
             lava-dispatcher elsewhere than {DEFAULT_CLIENT_DIR}).",
            install_script().display()
        );
    }
}

/// Serialises server start-ups in this process: `free_port()` hands out a port that is free
/// only until someone binds it, and the reference (Python) takes a while to bind; two
/// start-ups at once could pick the same port, and the reference, which cannot bind it, would
/// retry in the background while the test talks to the other server.
fn start_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Debian's reference coordinator on a free loopback port (fails with the install hint when
/// the Debian pieces are missing).
pub fn reference() -> crate::Server {
    require_debian_pieces();
    let _guard = start_lock();
    crate::start_reference()
}

/// Our coordinator on a free loopback port.
pub fn ours(extra: &[&str]) -> crate::Server {
    require_debian_pieces();
    let _guard = start_lock();
    crate::start_coordinator(extra)
}

/// One node of a group, played by LAVA's real client in a Python process.
pub struct LavaNode {
    pub client: String,
    child: Child,
    started: Instant,
}

/// What a [`LavaNode`] printed: one JSON object per step, then its exit status.
#[derive(Debug)]
pub struct NodeRun {
    pub client: String,
    pub lines: Vec<Value>,
    pub stderr: String,
    pub success: bool,
    pub timed_out: bool,
}

impl NodeRun {
    /// The final reply of step `index` (what the coordinator last answered the real client).
    pub fn reply(&self, index: usize) -> &Value {
        let line = self.line(index);
        line.get("reply")
            .unwrap_or_else(|| panic!("node {} step {index} has no reply: {line}", self.client))
    }

    /// What LAVA's API call returned to the test shell at step `index`.
    pub fn result(&self, index: usize) -> &Value {
        &self.line(index)["result"]
    }

    pub fn line(&self, index: usize) -> &Value {
        self.lines.get(index).unwrap_or_else(|| {
            panic!(
                "node {} printed no line for step {index} (exit ok: {}, timed out: {}):\n\
                 {}\nstderr:\n{}",
                self.client,
                self.success,
                self.timed_out,
                self.transcript(),
                self.stderr
            )
        })
    }

    pub fn transcript(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl LavaNode {
    /// Starts the real client for `script` (see `lava_client.py` for the format; `port` is
    /// filled in).
    pub fn spawn(port: u16, mut script: Value) -> LavaNode {
        require_debian_pieces();
        script["port"] = json!(port);
        if script.get("host").is_none() {
            script["host"] = json!("127.0.0.1");
        }
        let client = script["client"]
            .as_str()
            .expect("script.client is a string")
            .to_owned();
        let mut child = Command::new(SYSTEM_PYTHON)
            .arg(driver_script())
            .arg("-")
            .env("PYTHONPATH", client_pythonpath())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the LAVA client driver");
        let mut stdin = child.stdin.take().expect("driver stdin");
        stdin
            .write_all(script.to_string().as_bytes())
            .expect("write the driver's script");
        drop(stdin);
        LavaNode {
            client,
            child,
            started: Instant::now(),
        }
    }

    /// Waits for the node to finish (killing it after `timeout`) and collects its output.
    pub fn finish(mut self, timeout: Duration) -> NodeRun {
        let mut stdout = self.child.stdout.take().expect("driver stdout");
        let mut stderr = self.child.stderr.take().expect("driver stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the driver") {
                break status;
            }
            if self.started.elapsed() > timeout {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("reap the driver");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let lines = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("driver printed a non-JSON line ({e}): {l}"))
            })
            .collect();
        NodeRun {
            client: self.client.clone(),
            lines,
            stderr,
            success: status.success(),
            timed_out,
        }
    }
}

impl Drop for LavaNode {
    /// A test that fails before [`LavaNode::finish`] leaves no client polling behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One node of a hand-made request sequence: builds the bodies LAVA's dispatcher sends
/// (its `base_message` merged with the call's fields).
#[derive(Debug, Clone)]
pub struct Node {
    pub group: String,
    pub client: String,
    pub role: String,
    pub group_size: u32,
}

impl Node {
    pub fn new(group: &str, client: &str, role: &str, group_size: u32) -> Node {
        Node {
            group: group.into(),
            client: client.into(),
            role: role.into(),
            group_size,
        }
    }

    /// The dispatcher's `base_message` for this node, with `fields` merged in.
    pub fn body(&self, fields: Value) -> Value {
        let mut obj = Map::new();
        obj.insert("port".into(), json!(3079));
        obj.insert("blocksize".into(), json!(4096));
        obj.insert("poll_delay".into(), json!(3));
        obj.insert("host".into(), json!("localhost"));
        obj.insert("hostname".into(), json!(format!("host-{}", self.client)));
        obj.insert("client_name".into(), json!(self.client));
        obj.insert("group_name".into(), json!(self.group));
        obj.insert("role".into(), json!(self.role));
        if let Value::Object(extra) = fields {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        Value::Object(obj)
    }

    pub fn group_data(&self) -> Value {
        self.body(json!({"request": "group_data", "group_size": self.group_size}))
    }

    pub fn send(&self, id: &str, message: Value) -> Value {
        self.body(json!({"request": "lava_send", "messageID": id, "message": message}))
    }

    pub fn wait(&self, id: &str) -> Value {
        self.body(json!({"request": "lava_wait", "messageID": id, "nodeID": self.client}))
    }

    pub fn wait_all(&self, id: &str, role: Option<&str>) -> Value {
        match role {
            Some(role) => {
                self.body(json!({"request": "lava_wait_all", "messageID": id, "waitrole": role}))
            }
            None => self.body(json!({"request": "lava_wait_all", "messageID": id})),
        }
    }

    pub fn sync(&self, id: &str) -> Value {
        self.body(json!({"request": "lava_sync", "messageID": id}))
    }

    pub fn clear(&self) -> Value {
        self.body(json!({"request": "clear_group", "group_size": self.group_size}))
    }

    pub fn request(&self, name: &str) -> Value {
        self.body(json!({ "request": name }))
    }
}

/// How a request's bytes are written.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Header and body in one write (as our client does).
    OneWrite,
    /// The header, then the body in pieces of these sizes (the last repeats), pausing
    /// between writes so that each arrives on its own.
    Chunks(Vec<usize>),
    /// This header text instead of `%08X` of the body's length, then the body, in one write.
    Header(String),
}

/// Whether a step is one request, or a client's whole call (repeated while `wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Once,
    /// Repeat up to this many times while the answer is `wait`; the last answer counts.
    Poll(u32),
}

/// One request of a sequence.
#[derive(Debug, Clone)]
pub struct Step {
    pub body: String,
    pub delivery: Delivery,
    pub mode: Mode,
}

impl Step {
    /// A request as LAVA's dispatcher encodes it (`json.dumps`: ASCII).
    pub fn once(body: Value) -> Step {
        Step {
            body: lava_protocol::json::to_ascii_string(&body),
            delivery: Delivery::OneWrite,
            mode: Mode::Once,
        }
    }

    /// A whole call: repeated while the answer is `wait` (at most 10 times).
    pub fn call(body: Value) -> Step {
        Step {
            mode: Mode::Poll(10),
            ..Step::once(body)
        }
    }

    /// A raw body, sent as it is.
    pub fn raw(body: impl Into<String>) -> Step {
        Step {
            body: body.into(),
            delivery: Delivery::OneWrite,
            mode: Mode::Once,
        }
    }

    /// Sent with this header text instead of the body's length in `%08X`.
    pub fn header(mut self, header: impl Into<String>) -> Step {
        self.delivery = Delivery::Header(header.into());
        self
    }

    pub fn chunks(mut self, sizes: Vec<usize>) -> Step {
        self.delivery = Delivery::Chunks(sizes);
        self
    }
}

/// What one step got back: the parsed reply, `None` when the server closed without one.
pub type Answer = Option<Value>;

/// Sends one frame with `delivery` and reads the reply frame.
pub fn exchange(addr: &str, body: &str, delivery: &Delivery) -> Result<Answer, String> {
    parse_reply(exchange_text(addr, body, delivery)?)
}

/// Sends one frame with `delivery` and returns the reply's raw body (`None`: closed without
/// a reply).
pub fn exchange_text(
    addr: &str,
    body: &str,
    delivery: &Delivery,
) -> Result<Option<String>, String> {
    Ok(match delivery {
        Delivery::OneWrite => lava_protocol::Client::new(addr)
            .with_io_timeout(Duration::from_secs(10))
            .call_raw(body, None)
            .map_err(|e| format!("{e}"))?,
        Delivery::Header(header) => {
            let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut frame = header.as_bytes().to_vec();
            frame.extend_from_slice(body.as_bytes());
            stream
                .write_all(&frame)
                .map_err(|e| format!("write: {e}"))?;
            stream
                .shutdown(Shutdown::Write)
                .map_err(|e| e.to_string())?;
            lava_protocol::frame::read_frame(&mut stream, lava_protocol::client::MAX_REPLY)
                .map_err(|e| format!("read reply: {e}"))?
        }
        Delivery::Chunks(sizes) => {
            let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let bytes = body.as_bytes();
            let pause = Duration::from_millis(15);
            stream
                .write_all(format!("{:08X}", bytes.len()).as_bytes())
                .map_err(|e| format!("write header: {e}"))?;
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                std::thread::sleep(pause);
                let size = sizes[i.min(sizes.len() - 1)].max(1);
                let end = (at + size).min(bytes.len());
                stream
                    .write_all(&bytes[at..end])
                    .map_err(|e| format!("write body: {e}"))?;
                at = end;
                i += 1;
            }
            stream
                .shutdown(Shutdown::Write)
                .map_err(|e| e.to_string())?;
            lava_protocol::frame::read_frame(&mut stream, lava_protocol::client::MAX_REPLY)
                .map_err(|e| format!("read reply: {e}"))?
        }
    })
}

/// Parses a raw reply body, which must be ASCII as LAVA's peers write it.
pub fn parse_reply(text: Option<String>) -> Result<Answer, String> {
    match text {
        None => Ok(None),
        Some(text) => {
            if !text.is_ascii() {
                return Err(format!("reply is not ASCII (LAVA's peers escape): {text}"));
            }
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("reply is not JSON ({e}): {text}"))
        }
    }
}

/// Runs `steps` one request at a time against `addr`; an error (connection refused, reset,
/// bad reply) is recorded as `{"transport_error": ...}` and the sequence goes on.
pub fn run_sequence(addr: &str, steps: &[Step]) -> Vec<Answer> {
    run_sequence_text(addr, steps)
        .into_iter()
        .map(|(answer, _)| answer)
        .collect()
}

/// [`run_sequence`], with each final reply's raw body as well.
pub fn run_sequence_text(addr: &str, steps: &[Step]) -> Vec<(Answer, Option<String>)> {
    steps
        .iter()
        .map(|step| {
            let tries = match step.mode {
                Mode::Once => 1,
                Mode::Poll(n) => n.max(1),
            };
            let mut last = (None, None);
            for _ in 0..tries {
                last = match exchange_text(addr, &step.body, &step.delivery)
                    .and_then(|text| Ok((parse_reply(text.clone())?, text)))
                {
                    Ok(pair) => pair,
                    Err(e) => (Some(json!({ "transport_error": e })), None),
                };
                let waiting = last
                    .0
                    .as_ref()
                    .and_then(|a| a.get("response"))
                    .is_some_and(|r| r == "wait");
                if !waiting {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            last
        })
        .collect()
}

/// Our reply with the fields the reference never sends removed: the `error` of a `nack`.
pub fn normalise_ours(answer: &Answer) -> Answer {
    answer.as_ref().map(|v| {
        let mut v = v.clone();
        if v.get("response").is_some_and(|r| r == "nack") {
            if let Some(obj) = v.as_object_mut() {
                obj.remove("error");
            }
        }
        v
    })
}

/// Equal content and equal key order at every level (Python dicts keep insertion order and
/// LAVA's shell helpers print messages in that order).
pub fn same_answer(a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (None, None) => true,
        // The serialisations compare key order, which `==` ignores.
        (Some(a), Some(b)) => {
            a == b && serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
        }
        _ => false,
    }
}

/// Shows an answer in a report.
pub fn show(answer: &Answer) -> String {
    match answer {
        None => "(closed without a reply)".into(),
        Some(v) => v.to_string(),
    }
}
