//! `lava-bench`: our coordinator side by side with Debian's reference and with the floor (a
//! trivial server), on loopback. See `docs/BENCHMARKS.md`.
//!
//! Every request loop is bounded (per-request timeouts, per-round deadlines, time budgets),
//! so a misbehaving server costs errors in the result, never a hang.

pub mod ab;
pub mod console;
pub mod load;
pub mod net;
pub mod report;
pub mod row;
pub mod scale;
pub mod servers;
pub mod stats;
pub mod sync;
pub mod targets;
pub mod tool_timing;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use row::{Row, Section};
pub use servers::Kind;
use servers::{Floor, Process};
use sync::{Mode, SyncSpec};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Our `lava-coordinator` binary.
    pub coordinator: PathBuf,
    /// Debian's `lava-coordinator` script; `None`: not measured.
    pub reference: Option<PathBuf>,
    /// The `lava-multinode` binary of the tools; `None`: not measured.
    pub tools: Option<PathBuf>,
    /// The host's `lava-multinode` (with the VM-group launcher) of the console section; its
    /// `LOG_DIR/bin` tools are the guests', and the same binary makes the TCP calls there.
    pub launcher: PathBuf,
    pub quick: bool,
    /// Sections to run (all when empty).
    pub only: Vec<Part>,
    /// Progress on stderr.
    pub progress: bool,
    /// Node counts of the sync rows instead of the plan's.
    pub sync_nodes: Option<Vec<usize>>,
    /// Client counts of the throughput rows instead of the plan's.
    pub clients: Option<Vec<usize>>,
    /// Calls of the console section instead of the plan's.
    pub console_calls: Option<usize>,
    /// Clients shut their write side after the request, as LAVA's client does.
    pub half_close: bool,
    /// The command line, for the record.
    pub command: String,
}

/// The parts of the benchmark, as `--only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Sync,
    Barrier,
    Throughput,
    Scale,
    Tools,
    Console,
}

/// Sizes of one run: the default run, or the short smoke run of `--quick`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub sync_nodes: Vec<usize>,
    /// Rounds per sync row (ours), by node count.
    pub sync_rounds: Vec<(usize, usize)>,
    /// Rounds per sync row (reference), by node count: capped to keep the run short.
    pub reference_sync_rounds: Vec<(usize, usize)>,
    pub reference_round_timeout_s: f64,
    pub reference_budget_s: f64,
    pub poll_ms: u64,
    pub barrier_nodes: Vec<usize>,
    pub barrier_reps: usize,
    pub reference_barrier_nodes: Vec<usize>,
    pub reference_barrier_reps: usize,
    pub clients: Vec<usize>,
    /// Windows per server and client count, interleaved (ours, reference, floor, ours...);
    /// the row gives the median window.
    pub windows: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub idle_groups: Vec<u64>,
    pub reference_idle_groups: Vec<u64>,
    pub wakeup_rounds: usize,
    pub tool_send_reps: usize,
    pub tool_sync_reps: usize,
    pub reference_tool_sync_reps: usize,
    /// Calls of each kind in the console section (and of its TCP rows).
    pub console_calls: usize,
    /// In how many blocks the console section's calls are made, every measure in turn.
    pub console_blocks: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                sync_nodes: vec![4, 16],
                sync_rounds: vec![(16, 10), (256, 5)],
                reference_sync_rounds: vec![(4, 2), (256, 1)],
                reference_round_timeout_s: 15.0,
                reference_budget_s: 5.0,
                poll_ms: 10,
                barrier_nodes: vec![16],
                barrier_reps: 3,
                reference_barrier_nodes: vec![4],
                reference_barrier_reps: 1,
                clients: vec![1, 8, 64],
                windows: 1,
                warmup_s: 0.05,
                window_s: 0.3,
                idle_groups: vec![100, 300],
                reference_idle_groups: vec![100],
                wakeup_rounds: 10,
                tool_send_reps: 2,
                tool_sync_reps: 2,
                reference_tool_sync_reps: 1,
                console_calls: 3,
                console_blocks: 1,
            }
        } else {
            Plan {
                sync_nodes: vec![4, 16, 64, 256],
                sync_rounds: vec![(16, 200), (64, 100), (256, 40)],
                reference_sync_rounds: vec![(4, 10), (16, 5), (64, 2), (256, 1)],
                reference_round_timeout_s: 15.0,
                reference_budget_s: 12.0,
                poll_ms: 10,
                barrier_nodes: vec![16, 256],
                barrier_reps: 20,
                reference_barrier_nodes: vec![16],
                reference_barrier_reps: 3,
                clients: vec![1, 8, 64, 512],
                windows: 3,
                warmup_s: 0.2,
                window_s: 0.7,
                idle_groups: vec![1000, 10000],
                reference_idle_groups: vec![1000],
                wakeup_rounds: 200,
                tool_send_reps: 20,
                tool_sync_reps: 10,
                reference_tool_sync_reps: 3,
                console_calls: 100,
                console_blocks: 4,
            }
        }
    }
}

/// Rounds for `nodes` from a `(up to nodes, rounds)` table (the last entry for more).
fn rounds_for(table: &[(usize, usize)], nodes: usize) -> usize {
    table
        .iter()
        .find(|(up_to, _)| nodes <= *up_to)
        .or(table.last())
        .map_or(1, |(_, r)| *r)
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_mib: u64,
    /// `/proc/loadavg` when the run started and ended.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Share of the CPUs busy during one second before the run started (other work on the
    /// machine disturbs every figure).
    pub busy_before_run: f64,
}

/// (busy, total) jiffies of all CPUs.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of the CPUs busy over `over`.
fn busy_share(over: Duration) -> f64 {
    let a = cpu_jiffies();
    std::thread::sleep(over);
    match (a, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or(String::new(), |s| s.trim().to_owned())
}

impl Machine {
    pub fn probe(loadavg_start: String, busy_before_run: f64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |s| s.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            memory_mib,
            loadavg_start,
            loadavg_end: loadavg(),
            busy_before_run,
        }
    }
}

/// The result of a run: what `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub program: &'static str,
    pub version: &'static str,
    pub command: String,
    pub quick: bool,
    pub machine: Machine,
    pub coordinator: String,
    pub reference: Option<String>,
    pub tools: Option<String>,
    pub plan: Plan,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub targets: Vec<targets::Check>,
    pub notes: Vec<String>,
}

/// Progress on stderr: a line per finished measurement, and (on a terminal) a status line
/// updated in place while it runs.
pub struct Progress {
    start: Instant,
    enabled: bool,
    tty: bool,
    state: Mutex<(String, Instant)>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            start: Instant::now(),
            enabled,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new((String::new(), Instant::now())),
        }
    }

    fn stamp(&self) -> String {
        format!("[{:6.1}s]", self.start.elapsed().as_secs_f64())
    }

    /// A measurement starts.
    pub fn begin(&self, label: &str) {
        let mut state = self.state.lock().unwrap();
        state.0 = label.to_owned();
        if self.enabled && self.tty {
            eprint!("\r\x1b[K{} {label} ...", self.stamp());
            let _ = std::io::stderr().flush();
        }
    }

    /// Where the current measurement is (on a terminal, at most 10 times a second).
    pub fn tick(&self, what: &str) {
        if !(self.enabled && self.tty) {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if state.1.elapsed() < Duration::from_millis(100) {
            return;
        }
        state.1 = Instant::now();
        eprint!("\r\x1b[K{} {}: {what}", self.stamp(), state.0);
        let _ = std::io::stderr().flush();
    }

    /// The current measurement ended with `result`.
    pub fn end(&self, result: &str) {
        if !self.enabled {
            return;
        }
        let state = self.state.lock().unwrap();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        eprintln!("{clear}{} {}: {result}", self.stamp(), state.0);
    }

    pub fn note(&self, msg: &str) {
        if self.enabled {
            let clear = if self.tty { "\r\x1b[K" } else { "" };
            eprintln!("{clear}{} {msg}", self.stamp());
        }
    }
}

/// One server of the run, (re)started on demand: the reference dies on some client
/// behaviour, and a dead server must not spoil the following rows.
struct Slot {
    kind: Kind,
    binary: PathBuf,
    process: Option<Process>,
}

impl Slot {
    fn new(kind: Kind, binary: PathBuf) -> Slot {
        Slot {
            kind,
            binary,
            process: None,
        }
    }

    /// A fresh server.
    fn fresh(&mut self) -> Result<&mut Process, String> {
        self.process = None;
        let p = match self.kind {
            Kind::Ours => servers::start_ours(&self.binary, true)?,
            Kind::OursMemory => servers::start_ours(&self.binary, false)?,
            Kind::Reference => servers::start_reference(&self.binary)?,
            Kind::Floor => unreachable!("the floor runs in-process"),
        };
        Ok(self.process.insert(p))
    }

    /// The running server, restarted when it died.
    fn running(&mut self) -> Result<&mut Process, String> {
        let alive = self.process.as_mut().is_some_and(|p| p.running());
        if !alive {
            return self.fresh();
        }
        Ok(self.process.as_mut().expect("alive"))
    }
}

/// Runs `measure` against the slot's server, noting in the row when the server died.
fn measured(
    slot: &mut Slot,
    progress: &Progress,
    notes: &mut Vec<String>,
    measure: impl FnOnce(SocketAddr) -> Row,
) -> Option<Row> {
    let addr = match slot.running() {
        Ok(p) => p.addr,
        Err(e) => {
            notes.push(format!("{}: {e}", slot.kind.name()));
            progress.end(&format!("skipped: {e}"));
            return None;
        }
    };
    let mut row = measure(addr);
    let died = !slot.process.as_mut().is_some_and(|p| p.running());
    if died {
        row.errors += 1;
        *row.error_kinds.entry("server_died").or_default() += 1;
        let what = format!(
            "the {} server died during this measurement (restarted for the next)",
            slot.kind.name()
        );
        row.note = Some(match row.note.take() {
            Some(n) => format!("{n}; {what}"),
            None => what,
        });
    }
    progress.end(&report::summary(&row));
    Some(row)
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> Report {
    let progress = Progress::new(opts.progress);
    let mut plan = Plan::new(opts.quick);
    if let Some(nodes) = &opts.sync_nodes {
        plan.sync_nodes = nodes.clone();
    }
    if let Some(clients) = &opts.clients {
        plan.clients = clients.clone();
    }
    if let Some(calls) = opts.console_calls {
        plan.console_calls = calls;
    }
    net::set_half_close(opts.half_close);
    let loadavg_start = loadavg();
    let busy = busy_share(Duration::from_secs(1));
    if busy > 0.15 {
        progress.note(&format!(
            "warning: the CPUs were {:.0}% busy before the run started: other work disturbs the figures",
            busy * 100.0
        ));
    }
    let began = Instant::now();
    let wants = |p: Part| opts.only.is_empty() || opts.only.contains(&p);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut ours = Slot::new(Kind::Ours, opts.coordinator.clone());
    let mut memory = Slot::new(Kind::OursMemory, opts.coordinator.clone());
    let mut reference = opts
        .reference
        .as_ref()
        .map(|r| Slot::new(Kind::Reference, r.clone()));
    if reference.is_none() {
        notes.push("reference not measured (not installed, or --no-reference)".into());
    }
    let poll = Mode::Poll(Duration::from_millis(plan.poll_ms));
    let block = Mode::Block(10.0);

    if wants(Part::Sync) {
        let _ = ours.fresh();
        let _ = memory.fresh();
        for &n in &plan.sync_nodes {
            for slot in [&mut ours, &mut memory] {
                for mode in [poll, block] {
                    let kind = slot.kind;
                    progress.begin(&format!("sync N={n} {} {}", mode.variant(), kind.name()));
                    let spec = SyncSpec {
                        nodes: n,
                        rounds: rounds_for(&plan.sync_rounds, n),
                        mode,
                        round_timeout: Duration::from_secs(20),
                        budget: Duration::from_secs(30),
                    };
                    rows.extend(measured(slot, &progress, &mut notes, |addr| {
                        sync::sync_latency(addr, kind, Section::Sync, 0, spec, &progress)
                    }));
                }
            }
            if let Some(reference) = reference.as_mut() {
                progress.begin(&format!("sync N={n} {} reference", poll.variant()));
                let spec = SyncSpec {
                    nodes: n,
                    rounds: rounds_for(&plan.reference_sync_rounds, n),
                    mode: poll,
                    round_timeout: Duration::from_secs_f64(plan.reference_round_timeout_s),
                    budget: Duration::from_secs_f64(plan.reference_budget_s),
                };
                let _ = reference.fresh();
                rows.extend(measured(reference, &progress, &mut notes, |addr| {
                    sync::sync_latency(addr, Kind::Reference, Section::Sync, 0, spec, &progress)
                }));
            }
        }
    }

    if wants(Part::Barrier) {
        let _ = ours.fresh();
        let _ = memory.fresh();
        for &n in &plan.barrier_nodes {
            for slot in [&mut ours, &mut memory] {
                for mode in [poll, block] {
                    let kind = slot.kind;
                    progress.begin(&format!(
                        "start barrier N={n} {} {}",
                        mode.variant(),
                        kind.name()
                    ));
                    rows.extend(measured(slot, &progress, &mut notes, |addr| {
                        sync::start_barrier(
                            addr,
                            kind,
                            n,
                            mode,
                            plan.barrier_reps,
                            Duration::from_secs(20),
                            &progress,
                        )
                    }));
                }
            }
        }
        if let Some(reference) = reference.as_mut() {
            for &n in &plan.reference_barrier_nodes {
                progress.begin(&format!("start barrier N={n} {} reference", poll.variant()));
                let _ = reference.fresh();
                rows.extend(measured(reference, &progress, &mut notes, |addr| {
                    sync::start_barrier(
                        addr,
                        Kind::Reference,
                        n,
                        poll,
                        plan.reference_barrier_reps,
                        Duration::from_secs_f64(plan.reference_round_timeout_s),
                        &progress,
                    )
                }));
            }
        }
    }

    if wants(Part::Throughput) {
        let warmup = Duration::from_secs_f64(plan.warmup_s);
        let window = Duration::from_secs_f64(plan.window_s);
        let _ = ours.fresh();
        let _ = memory.fresh();
        if let Some(reference) = reference.as_mut() {
            let _ = reference.fresh();
        }
        let floor = Floor::start(4);
        if let Err(e) = &floor {
            notes.push(format!("floor server did not start: {e}"));
        }
        for &c in &plan.clients {
            // Windows interleaved across the servers, so that a disturbance of the machine
            // does not fall on one server only.
            let mut windows: Vec<(Kind, Vec<load::Window>)> = Vec::new();
            let mut died = Vec::new();
            for w in 0..plan.windows {
                let mut kinds = vec![Kind::Ours, Kind::OursMemory];
                if reference.is_some() {
                    kinds.push(Kind::Reference);
                }
                if floor.is_ok() {
                    kinds.push(Kind::Floor);
                }
                for kind in kinds {
                    progress.begin(&format!(
                        "throughput {c} clients, window {}/{}, {}",
                        w + 1,
                        plan.windows,
                        kind.name()
                    ));
                    let slot = match kind {
                        Kind::Ours => Some(&mut ours),
                        Kind::OursMemory => Some(&mut memory),
                        Kind::Reference => reference.as_mut(),
                        Kind::Floor => None,
                    };
                    let addr = match (slot, &floor) {
                        (Some(slot), _) => match slot.running() {
                            Ok(p) => p.addr,
                            Err(e) => {
                                progress.end(&format!("skipped: {e}"));
                                continue;
                            }
                        },
                        (None, Ok(floor)) => floor.addr,
                        (None, Err(_)) => continue,
                    };
                    let result = load::window(addr, c, warmup, window);
                    progress.end(&format!(
                        "{:.0} req/s, {} errors",
                        result.rate,
                        result.errors.total()
                    ));
                    let alive = match kind {
                        Kind::Ours => ours.process.as_mut().is_some_and(|p| p.running()),
                        Kind::OursMemory => memory.process.as_mut().is_some_and(|p| p.running()),
                        Kind::Reference => reference
                            .as_mut()
                            .and_then(|r| r.process.as_mut())
                            .is_some_and(|p| p.running()),
                        Kind::Floor => true,
                    };
                    if !alive {
                        died.push(kind);
                    }
                    match windows.iter_mut().find(|(k, _)| *k == kind) {
                        Some((_, list)) => list.push(result),
                        None => windows.push((kind, vec![result])),
                    }
                }
            }
            for (kind, list) in windows {
                let mut row = load::row(kind, c, &list);
                let deaths = died.iter().filter(|k| **k == kind).count() as u64;
                if deaths > 0 {
                    row.errors += deaths;
                    *row.error_kinds.entry("server_died").or_default() += deaths;
                    row.note = Some(format!("the server died in {deaths} window(s) (restarted)"));
                }
                rows.push(row);
            }
        }
    }

    if wants(Part::Scale) {
        for slot in [&mut ours, &mut memory] {
            let kind = slot.kind;
            progress.begin(&format!("scale: idle groups, {}", kind.name()));
            match slot.fresh() {
                Ok(server) => {
                    let mem = scale::memory(server, &plan.idle_groups, 4, &progress);
                    progress.end(
                        &mem.iter()
                            .filter(|r| r.section == Section::Rss)
                            .map(report::summary)
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                    rows.extend(mem);
                }
                Err(e) => {
                    progress.end(&format!("skipped: {e}"));
                    notes.push(format!("{}: {e}", kind.name()));
                    continue;
                }
            }
            let idle = plan.idle_groups.last().copied().unwrap_or(0);
            for mode in [block, poll] {
                progress.begin(&format!(
                    "wake-up: 4 nodes {} with {idle} idle groups, {}",
                    mode.variant(),
                    kind.name()
                ));
                let spec = SyncSpec {
                    nodes: 4,
                    rounds: plan.wakeup_rounds,
                    mode,
                    round_timeout: Duration::from_secs(20),
                    budget: Duration::from_secs(30),
                };
                rows.extend(measured(slot, &progress, &mut notes, |addr| {
                    let mut row =
                        sync::sync_latency(addr, kind, Section::Wakeup, idle, spec, &progress);
                    row.n = idle;
                    row
                }));
            }
        }
        if let Some(reference) = reference.as_mut() {
            progress.begin("scale: idle groups, reference");
            match reference.fresh() {
                // One client at a time: the reference drops concurrent connections.
                Ok(server) => {
                    let mem = scale::memory(server, &plan.reference_idle_groups, 1, &progress);
                    progress.end(
                        &mem.iter()
                            .filter(|r| r.section == Section::Rss)
                            .map(report::summary)
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                    rows.extend(mem);
                }
                Err(e) => {
                    progress.end(&format!("skipped: {e}"));
                    notes.push(format!("reference: {e}"));
                }
            }
        }
    }

    let mut tools_binary = None;
    if wants(Part::Tools) {
        match &opts.tools {
            None => notes.push("tools not measured: no lava-multinode binary found".into()),
            Some(binary) => match tool_timing::check_ready(binary) {
                Err(e) => {
                    progress.note(&format!("tools not measured: {e}"));
                    notes.push(format!("tools not measured (not ready): {e}"));
                }
                Ok(()) => {
                    tools_binary = Some(binary.display().to_string());
                    let tools = crate::tools::Tools::new(binary.clone(), None);
                    let _ = ours.fresh();
                    progress.begin("tools: lava-send, ours");
                    rows.extend(measured(&mut ours, &progress, &mut notes, |addr| {
                        tool_timing::send(&tools, addr, Kind::Ours, plan.tool_send_reps)
                    }));
                    progress.begin("tools: 2-node lava-sync, ours");
                    rows.extend(measured(&mut ours, &progress, &mut notes, |addr| {
                        tool_timing::sync(
                            &tools,
                            addr,
                            Kind::Ours,
                            plan.tool_sync_reps,
                            Duration::from_secs(20),
                        )
                    }));
                    if let Some(reference) = reference.as_mut() {
                        let _ = reference.fresh();
                        progress.begin("tools: lava-send, reference");
                        rows.extend(measured(reference, &progress, &mut notes, |addr| {
                            tool_timing::send(&tools, addr, Kind::Reference, plan.tool_send_reps)
                        }));
                        progress.begin("tools: 2-node lava-sync, reference");
                        rows.extend(measured(reference, &progress, &mut notes, |addr| {
                            tool_timing::sync(
                                &tools,
                                addr,
                                Kind::Reference,
                                plan.reference_tool_sync_reps,
                                Duration::from_secs_f64(plan.reference_round_timeout_s),
                            )
                        }));
                    }
                }
            },
        }
    }

    if wants(Part::Console) {
        match console::check_launcher(&opts.launcher) {
            Err(e) => {
                progress.note(&format!("console section not measured: {e}"));
                notes.push(format!("console section not measured: {e}"));
            }
            Ok(()) => {
                let tools = crate::tools::Tools::new(opts.launcher.clone(), None);
                let _ = ours.fresh();
                let blocks = plan.console_blocks.max(1);
                let calls = plan.console_calls.div_ceil(blocks);
                let limit = Duration::from_secs(60 + calls as u64);
                let mut collected = Vec::new();
                // Blocks of every measure in turn, so that a disturbance of the machine
                // does not fall on one of them only.
                for b in 1..=blocks {
                    let addr = match ours.running() {
                        Ok(p) => p.addr,
                        Err(e) => {
                            progress.note(&format!("console section: {e}"));
                            notes.push(format!("ours: {e}"));
                            break;
                        }
                    };
                    let what = |w: &str| format!("console section, block {b}/{blocks}: {w}, ours");
                    let done = |s: &[console::Samples]| {
                        s.iter()
                            .map(|s| {
                                format!(
                                    "{} {}: median {:.2} ms",
                                    s.variant,
                                    s.n,
                                    stats::median(&s.ms).unwrap_or(0.0)
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let mut block = Vec::new();
                    progress.begin(&what("lava-send and 2- and 3-node lava-sync over TCP"));
                    block.push(console::tcp_send(&tools, addr, calls));
                    block.push(console::tcp_sync(&tools, addr, 2, calls));
                    block.push(console::tcp_sync(&tools, addr, 3, calls));
                    progress.end(&done(&block));
                    progress.begin(&what("the guests' loop by 3 shells over TCP"));
                    let got = console::tcp_loop(&tools, addr, 3, calls, limit);
                    progress.end(&done(&got));
                    block.extend(got);
                    progress.begin(&what(
                        "vm-group run, 2 guests on the console and the host over TCP",
                    ));
                    let got = console::over_console(&opts.launcher, addr, calls, limit, &progress);
                    progress.end(&done(&got));
                    block.extend(got);
                    if !ours.process.as_mut().is_some_and(|p| p.running()) {
                        for s in &mut block {
                            s.errors.add_named("server_died", 1);
                        }
                    }
                    collected.push(block);
                }
                rows.extend(console::rows(collected));
            }
        }
    }

    let targets = targets::check(&rows);
    Report {
        program: "lava-bench",
        version: env!("CARGO_PKG_VERSION"),
        command: opts.command.clone(),
        quick: opts.quick,
        machine: Machine::probe(loadavg_start, busy),
        coordinator: opts.coordinator.display().to_string(),
        reference: opts.reference.as_ref().map(|r| r.display().to_string()),
        tools: tools_binary,
        plan,
        seconds: began.elapsed().as_secs_f64(),
        rows,
        targets,
        notes,
    }
}
