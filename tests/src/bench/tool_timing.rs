//! Wall time of the target tools, run as LAVA runs them: processes started through their
//! `lava-send` / `lava-sync` links, configured by `LAVA_MULTINODE_*` environment variables.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::net::Errors;
use super::row::{Row, Section};
use super::servers::Kind;
use super::stats::ms;
use super::sync::group_name;
use crate::tools::{GroupConfig, Node, Tools};
use crate::TempDir;

/// Whether `binary` is a working `lava-multinode` (it installs its links); `Err` says why not.
pub fn check_ready(binary: &Path) -> Result<(), String> {
    if !binary.exists() {
        return Err(format!("{} does not exist", binary.display()));
    }
    let dir = TempDir::new("bench-tools-check");
    let out = Command::new(binary)
        .arg("install")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} install` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for link in ["lava-send", "lava-sync"] {
        if !dir.path().join(link).exists() {
            return Err(format!("`lava-multinode install` made no {link} link"));
        }
    }
    Ok(())
}

fn config(addr: SocketAddr, group: &str, timeout: f64) -> GroupConfig {
    let mut c = GroupConfig::new(&addr.to_string(), group, 2);
    c.timeout = timeout;
    // Only used against a coordinator without `block` (the reference); as the sync rows.
    c.poll = 0.01;
    c
}

/// Wall time of `lava-send` (one node of a 2-node group), per run.
pub fn send(tools: &Tools, addr: SocketAddr, server: Kind, reps: usize) -> Row {
    let began = Instant::now();
    let (samples, errors) = send_samples(tools, addr, reps);
    Row::new(Section::Tool, "lava-send", 1, server)
        .latencies(&samples)
        .errors(&errors)
        .seconds(began.elapsed().as_secs_f64())
        .note(format!("{}", tools.binary().display()))
}

/// `reps` runs of `lava-send` (one node of a 2-node group): each run's wall time in
/// milliseconds, from starting the process to its exit, and the failed runs.
pub fn send_samples(tools: &Tools, addr: SocketAddr, reps: usize) -> (Vec<f64>, Errors) {
    let group = config(addr, &group_name("tool-send"), 20.0);
    let node = Node::new(tools, &group, "node0", "node");
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    for _ in 0..reps {
        let run = node.run("lava-send", &["bench", "key=value"]);
        if run.code == 0 {
            samples.push(ms(run.elapsed));
        } else {
            errors.add_named("tool_failed", 1);
        }
    }
    (samples, errors)
}

/// Wall time of a 2-node `lava-sync` (a fresh group each time): from starting the first
/// node's process to the exit of the last.
pub fn sync(tools: &Tools, addr: SocketAddr, server: Kind, reps: usize, timeout: Duration) -> Row {
    let began = Instant::now();
    let (samples, errors) = sync_samples(tools, addr, 2, reps, timeout);
    Row::new(Section::Tool, "lava-sync", 2, server)
        .latencies(&samples)
        .errors(&errors)
        .seconds(began.elapsed().as_secs_f64())
        .note(format!("{}", tools.binary().display()))
}

/// `reps` `lava-sync` rounds of `nodes` processes (a fresh group of `nodes` each time,
/// every process started at once): each round's wall time in milliseconds, from starting
/// the first node's process to the exit of the last, and the failed rounds.
pub fn sync_samples(
    tools: &Tools,
    addr: SocketAddr,
    nodes: usize,
    reps: usize,
    timeout: Duration,
) -> (Vec<f64>, Errors) {
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    for _ in 0..reps {
        let mut group = config(addr, &group_name("tool-sync"), timeout.as_secs_f64());
        group.group_size = Some(nodes as u32);
        let members: Vec<Node> = (0..nodes)
            .map(|i| Node::new(tools, &group, &format!("node{i}"), "node"))
            .collect();
        let t0 = Instant::now();
        let running: Vec<_> = members
            .iter()
            .map(|m| m.spawn("lava-sync", &["bench"]))
            .collect();
        let codes: Vec<i32> = running.into_iter().map(|p| p.wait().code).collect();
        // Every one has exited once every wait returned.
        let wall = t0.elapsed();
        if codes.iter().all(|c| *c == 0) {
            samples.push(ms(wall));
        } else {
            errors.add_named("tool_failed", 1);
        }
    }
    (samples, errors)
}
