//! `lava-bench --baseline PATH`: what a change of our coordinator costs, side by side in one
//! run: the baseline binary (e.g. the commit before the change), ours, and ours with its web
//! view watched (a groups page and a group page open, live), all durable, measured in turns
//! (sync rounds, then `lava_send` throughput windows interleaved), medians reported.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::row::Section;
use super::servers::{spawn_until_listening, Kind, Process};
use super::sync::{self, Mode, SyncSpec};
use super::{load, stats, Progress};
use crate::{free_port, wait_for_port, TempDir};

/// The three servers compared.
const LABELS: [&str; 3] = ["baseline", "ours", "ours, web view watched"];

/// A durable coordinator at `binary`, with its web view on `web` when given.
fn start(binary: &Path, web: Option<&str>) -> Result<Process, String> {
    spawn_until_listening(Kind::Ours, TempDir::new("bench-ab"), |port, dir| {
        let mut c = Command::new(binary);
        c.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(dir.join("absent.conf"))
            .arg("--logfile")
            .arg(dir.join("server.log"))
            .args(["--loglevel", "INFO"])
            .arg("--state")
            .arg(dir.join("state.db"));
        if let Some(web) = web {
            c.args(["--web", web]);
        }
        c
    })
}

/// A browser's worth of watching: the groups page's live stream, and the page of a group
/// re-read every second (with its own stream), until dropped. Counts the bytes it got.
struct Watcher {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    fn start(web: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for path in ["/events", "/"] {
            let (stop, bytes, web) = (stop.clone(), bytes.clone(), web.to_owned());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&web) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let _ = write!(
                        s,
                        "GET {path} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
                    );
                    let mut buf = [0u8; 16384];
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                bytes.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    if path == "/" {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }));
        }
        Watcher {
            stop,
            bytes,
            threads,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs the comparison and prints its table; `quick`: a smoke run.
pub fn run(baseline: &Path, ours: &Path, quick: bool) -> Result<String, String> {
    let progress = Progress::new(true);
    let web = format!("127.0.0.1:{}", free_port());
    let mut servers = [
        start(baseline, None)?,
        start(ours, None)?,
        start(ours, Some(&web))?,
    ];
    if !wait_for_port(&web, Duration::from_secs(10)) {
        return Err(format!("the web view did not listen on {web}"));
    }
    let watcher = Watcher::start(&web);
    let addrs: Vec<SocketAddr> = servers.iter().map(|p| p.addr).collect();
    let (nodes, rounds, clients, windows, window) = if quick {
        (vec![4], 3, vec![8], 1, 0.5)
    } else {
        (vec![16, 64], 40, vec![8, 64], 7, 2.0)
    };
    let mut out = String::new();
    out.push_str(&format!(
        "| measure | {} | {} | {} |\n| --- | --- | --- | --- |\n",
        LABELS[0], LABELS[1], LABELS[2]
    ));
    for &n in &nodes {
        // Rounds in turns of a few, so that a disturbance does not fall on one server only.
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 3];
        let turns = 4;
        for _ in 0..turns {
            for (i, addr) in addrs.iter().enumerate() {
                progress.begin(&format!("sync N={n} block {}", LABELS[i]));
                let spec = SyncSpec {
                    nodes: n,
                    rounds: (rounds / turns).max(1),
                    mode: Mode::Block(10.0),
                    round_timeout: Duration::from_secs(20),
                    budget: Duration::from_secs(30),
                };
                let row = sync::sync_latency(*addr, Kind::Ours, Section::Sync, 0, spec, &progress);
                progress.end(&format!("median {:?} ms", row.median_ms));
                if let Some(m) = row.median_ms {
                    samples[i].push(m);
                }
            }
        }
        let cells: Vec<String> = samples
            .iter()
            .map(|s| stats::median(s).map_or("-".into(), |m| format!("{m:.2} ms")))
            .collect();
        out.push_str(&format!(
            "| sync N={n} block, median of {turns} turns' medians | {} | {} | {} |\n",
            cells[0], cells[1], cells[2]
        ));
    }
    for &c in &clients {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for w in 0..windows {
            for (i, addr) in addrs.iter().enumerate() {
                progress.begin(&format!(
                    "throughput {c} clients window {}/{windows} {}",
                    w + 1,
                    LABELS[i]
                ));
                let result = load::window(
                    *addr,
                    c,
                    Duration::from_millis(300),
                    Duration::from_secs_f64(window),
                );
                progress.end(&format!("{:.0} req/s", result.rate));
                rates[i].push(result.rate);
            }
        }
        let cells: Vec<String> = rates
            .iter()
            .map(|r| {
                let spread = match (
                    r.iter().cloned().reduce(f64::min),
                    r.iter().cloned().reduce(f64::max),
                ) {
                    (Some(lo), Some(hi)) => format!(" ({lo:.0}-{hi:.0})"),
                    _ => String::new(),
                };
                stats::median(r).map_or("-".into(), |m| format!("{m:.0} req/s{spread}"))
            })
            .collect();
        out.push_str(&format!(
            "| lava_send, {c} clients, median of {windows} windows (range) | {} | {} | {} |\n",
            cells[0], cells[1], cells[2]
        ));
    }
    let watched = watcher.bytes.load(Ordering::Relaxed);
    drop(watcher);
    for (i, p) in servers.iter_mut().enumerate() {
        if !p.running() {
            return Err(format!("the {} server died during the run", LABELS[i]));
        }
    }
    out.push_str(&format!(
        "\nThe watched web view sent {watched} bytes to its two watchers during the run.\n"
    ));
    Ok(out)
}
