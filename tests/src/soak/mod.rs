//! `lava-soak`: issue 15's fault-injection soak against the real `lava-coordinator` on
//! loopback. Each scenario drives load and faults, checks invariants, and reports one line.
//! Shared pieces: a seeded RNG, the coordinator process (start, kill -9, restart, SIGTERM),
//! status requests, raw sockets (a chosen source address, a reset), figures.

pub mod disk;
pub mod hostile;
pub mod limits;
pub mod storm;
pub mod vanish;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lava_protocol::Client;

/// What a scenario reports.
pub struct Outcome {
    pub name: &'static str,
    /// Invariant violations that are not known open findings.
    pub violations: usize,
    /// Violations of known, still open findings (they do not fail the run).
    pub known: usize,
    /// The one line, without the scenario's name.
    pub line: String,
    /// The first few violations, in words (printed below the line).
    pub details: Vec<String>,
}

impl Outcome {
    pub fn print(&self) {
        println!("{}: {}", self.name, self.line);
        for d in self.details.iter().take(10) {
            println!("  {}: {d}", self.name);
        }
        if self.details.len() > 10 {
            println!("  {}: ... {} more", self.name, self.details.len() - 10);
        }
    }
}

/// The run's options.
#[derive(Clone)]
pub struct Opts {
    pub large: bool,
    pub seed: u64,
    pub coordinator: PathBuf,
}

/// splitmix64: small, seedable, good enough to pick delays and kinds.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// An independent stream for `tag` (a node, a thread).
    pub fn fork(seed: u64, tag: u64) -> Self {
        let mut r = Rng::new(seed.wrapping_add(tag.wrapping_mul(0xA24B_AED4_963E_E407)));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The real coordinator, on a loopback port, with a configuration and a state file; killed
/// when dropped.
pub struct Coord {
    pub child: Option<Child>,
    pub port: u16,
    pub addr: String,
    pub state: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    pub bin: PathBuf,
}

impl Coord {
    /// Starts it with `config` (JSON) in `dir`, its state in `state`, and waits until it
    /// answers `status`.
    pub fn start(bin: &Path, dir: &Path, state: &Path, config: &str) -> Result<Coord, String> {
        let conf = dir.join("lava-coordinator.conf");
        std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = lava_multinode_tests::free_port();
            let mut c = Coord {
                child: None,
                port,
                addr: format!("127.0.0.1:{port}"),
                state: state.to_owned(),
                conf: conf.clone(),
                log: dir.join("coordinator.log"),
                bin: bin.to_owned(),
            };
            c.spawn()?;
            if c.wait_ready(Duration::from_secs(15)).is_some() {
                return Ok(c);
            }
            last = std::fs::read_to_string(&c.log).unwrap_or_default();
            c.kill9();
        }
        Err(format!("the coordinator did not start: {last:.2000}"))
    }

    pub fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(&self.bin)
            .args(["--listen", &self.addr, "--loglevel", "INFO", "--config"])
            .arg(&self.conf)
            .arg("--logfile")
            .arg(&self.log)
            .arg("--state")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Time until it answers `status`, from now; `None` when it does not within `timeout`
    /// (or has exited).
    pub fn wait_ready(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if status(&self.addr, Duration::from_secs(2)).is_ok() {
                return Some(start.elapsed());
            }
            if !self.running() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; how long it took to exit, or `None` when it had not within `timeout` (then it
    /// is still running).
    pub fn terminate(&mut self, timeout: Duration) -> Option<Duration> {
        let child = self.child.as_mut()?;
        signal(child.id(), 15);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr.clone()).with_connect_timeout(Duration::from_millis(500))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, sig: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) on a child process this program started.
    unsafe {
        kill(pid as i32, sig);
    }
}

/// The coordinator's `status` answer, within `timeout`.
pub fn status(addr: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let client = Client::new(addr.to_owned())
        .with_connect_timeout(timeout)
        .with_io_timeout(timeout);
    let body = client
        .call_raw(r#"{"request": "status"}"#, None)
        .map_err(|e| e.to_string())?
        .ok_or("closed without a reply")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if v["response"] != "status" {
        return Err(format!("status answered {body:.200}"));
    }
    Ok(v)
}

/// Sends raw bytes on one connection (half-closing when `close_write`), reads what comes
/// back within `timeout`.
pub fn raw(
    addr: &str,
    bytes: &[u8],
    close_write: bool,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // The coordinator may answer and close before all is written (a header over a limit):
    // read what it said all the same.
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if !out.is_empty() => {
            let _ = e;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// A frame of `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = format!("{:08X}", body.len()).into_bytes();
    f.extend_from_slice(body);
    f
}

pub use lava_multinode_tests::net::{connect_from, reset};

/// Figures: the `q` quantile of `values` (sorted here), in milliseconds.
pub fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v: Vec<Duration> = values.to_vec();
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

pub fn max_ms(values: &[Duration]) -> f64 {
    values
        .iter()
        .max()
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
