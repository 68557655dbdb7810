//! The servers under test: our coordinator, Debian's reference, and the floor (a trivial
//! server inside this process), all on loopback.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{free_port, wait_for_port, TempDir};

/// Which server a figure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Our coordinator as it ships: durable state (SQLite, `state_sync` full).
    Ours,
    /// Our coordinator with `--state :memory:` (no durable state).
    OursMemory,
    Reference,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursMemory => "ours_memory",
            Kind::Reference => "reference",
            Kind::Floor => "floor",
        }
    }
}

/// A coordinator process on loopback, killed when dropped.
pub struct Process {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory, bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss(&self) -> Option<u64> {
        rss_of(self.pid())
    }

    /// The last lines of the server's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a process, bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn spawn_until_listening(
    kind: Kind,
    mut dir: TempDir,
    mut command: impl FnMut(u16, &Path) -> Command,
) -> Result<Process, String> {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = command(port, dir.path());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.name()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut p = Process {
            kind,
            addr,
            child,
            dir,
        };
        if wait_for_port(&addr.to_string(), Duration::from_secs(10)) && p.running() {
            // wait_for_port's probe connection is an idle client for a moment; let the
            // reference (one connection at a time) get past it.
            std::thread::sleep(Duration::from_millis(100));
            return Ok(p);
        }
        last = p.log_tail();
        dir = std::mem::replace(&mut p.dir, TempDir::new("bench-unused"));
    }
    Err(format!("{} did not start listening: {last}", kind.name()))
}

/// Starts our coordinator at `binary` on a free loopback port, logging at INFO (its
/// default) to a scratch file; `durable`: with its default durable state in a scratch file,
/// else with `--state :memory:`.
pub fn start_ours(binary: &Path, durable: bool) -> Result<Process, String> {
    let kind = if durable {
        Kind::Ours
    } else {
        Kind::OursMemory
    };
    spawn_until_listening(kind, TempDir::new("bench-ours"), |port, dir| {
        let mut c = Command::new(binary);
        c.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(dir.join("absent.conf"))
            .arg("--logfile")
            .arg(dir.join("server.log"))
            .args(["--loglevel", "INFO"])
            .arg("--state");
        if durable {
            // Durable state (the default) in a scratch file on the same disk as the default
            // location, never the user's own state file.
            c.arg(dir.join("state.db"));
        } else {
            c.arg(":memory:");
        }
        c
    })
}

/// Starts Debian's reference coordinator (`/usr/bin/lava-coordinator` run by python3) on a
/// free port, logging at INFO (its default). It binds 0.0.0.0; we only talk to 127.0.0.1.
pub fn start_reference(script: &Path) -> Result<Process, String> {
    spawn_until_listening(Kind::Reference, TempDir::new("bench-ref"), |port, dir| {
        let conf = dir.join("lava-coordinator.conf");
        let _ = std::fs::write(
            &conf,
            format!(
                r#"{{"port": {port}, "blocksize": 4096, "poll_delay": 1, "coordinator_hostname": "127.0.0.1"}}"#
            ),
        );
        let mut c = Command::new("/usr/bin/python3");
        c.arg(script)
            .arg("--config")
            .arg(&conf)
            .arg("--logfile")
            .arg(dir.join("server.log"))
            .args(["--loglevel", "INFO"]);
        c
    })
}

/// Whether Debian's reference is installed at `script`.
pub fn reference_installed(script: &Path) -> bool {
    script.exists() && Path::new("/usr/bin/python3").exists()
}

/// The floor: the least work a connection-per-request server can do. Worker threads
/// accept on one listener, read the request frame, write a fixed `ack` and close. No
/// parsing, no state, no logging.
pub struct Floor {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    pub served: Arc<AtomicU64>,
}

/// The floor's reply frame.
const FLOOR_REPLY: &[u8] = b"00000013{\"response\": \"ack\"}";

impl Floor {
    pub fn start(threads: usize) -> std::io::Result<Floor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        // std listens with a backlog of 128: 512 clients connecting at once would see dropped
        // SYNs that our coordinator (4096) does not. Listening again updates the backlog.
        relisten(&listener, 4096)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let workers = (0..threads)
            .map(|_| {
                let listener = listener.try_clone().expect("clone listener");
                let stop = stop.clone();
                let served = served.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((stream, _)) = listener.accept() else {
                            continue;
                        };
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if serve_fixed(stream).is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Ok(Floor {
            addr,
            stop,
            workers,
            served,
        })
    }
}

/// `listen(2)` again on a listening socket, with `backlog` (std has no API for it).
fn relisten(listener: &TcpListener, backlog: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn listen(fd: i32, backlog: i32) -> i32;
    }
    // SAFETY: `listen` only reads its two integer arguments; the descriptor is a valid,
    // listening socket owned by `listener` for the duration of the call.
    let rc = unsafe { listen(listener.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn serve_fixed(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Read the frame: the header, then as many bytes as it announces (or up to EOF).
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    let mut left = std::str::from_utf8(&header)
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let mut scratch = [0u8; 4096];
    while left > 0 {
        match stream.read(&mut scratch[..left.min(4096)])? {
            0 => break,
            n => left -= n,
        }
    }
    stream.write_all(FLOOR_REPLY)?;
    stream.shutdown(Shutdown::Write)
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake every worker blocked in accept.
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..self.workers.len() {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
        for w in self.workers.drain(..) {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

/// Where a binary of this workspace is: `target/release/NAME` when built, else
/// `target/debug/NAME`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let root = crate::workspace_root();
    let release = root.join("target/release").join(name);
    if release.exists() {
        release
    } else {
        root.join("target/debug").join(name)
    }
}
