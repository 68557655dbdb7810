//! The MultiNode API over a VM's console next to TCP, against our coordinator.
//!
//! TCP, bench-timed: the real `lava-send` and `lava-sync` processes, timed from the bench
//! as `tool_timing` times them (from starting the process, or the first of a sync's
//! processes started together, to the exit of the last).
//!
//! Console: the same calls through the real launcher's relay. `lava-multinode vm-group run`
//! with two "VMs" of role `guests`, each a shell on the launcher's pseudo-terminal (a
//! process guest, as `tests/tests/console_sessions.rs` plays them) with the launcher's own
//! `LOG_DIR/bin` tools and `LAVA_MULTINODE_TRANSPORT=console`, whose one `console_commands`
//! entry runs a loop: N pairs of `date` (the clock's own cost), N timed `lava-send`, an
//! untimed `lava-sync` that lines everybody up, N timed `lava-sync`. Each call is timed
//! inside the guest with `date +%s%N` just before and just after it, printed on the console
//! and read back from `LOG_DIR/CLIENT.log`. A VM group always has the host as a member, so
//! every sync has three members: the host test runs the same loop over TCP (the host's
//! tools), and a sync round is measured across the three on the one clock they share (they
//! all run on this machine).
//!
//! TCP shell loop: the same loop by three shells over TCP (a group of three), timed the
//! same way: what the console rows compare with, call for call.
//!
//! The run makes its calls in blocks, every measure in turn (`Plan::console_blocks`), so
//! that a disturbance of the machine does not fall on one of them only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::net::Errors;
use super::row::{Row, Section};
use super::servers::Kind;
use super::sync::group_name;
use super::tool_timing;
use super::Progress;
use crate::tools::Tools;
use crate::TempDir;

/// Whether `launcher` is a `lava-multinode` with the VM-group launcher (the static builds
/// for guests have none); `Err` says why not.
pub fn check_launcher(launcher: &Path) -> Result<(), String> {
    if !launcher.exists() {
        return Err(format!("{} does not exist", launcher.display()));
    }
    let out = Command::new(launcher)
        .args(["vm-group", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", launcher.display()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} has no VM-group launcher: {}",
            launcher.display(),
            text.lines().next().unwrap_or_default().trim()
        ));
    }
    Ok(())
}

/// The samples of one measure of this section from one block of the run; the blocks'
/// samples of a measure make its row ([`rows`]).
#[derive(Debug, Clone)]
pub struct Samples {
    pub variant: String,
    pub n: u64,
    /// Milliseconds.
    pub ms: Vec<f64>,
    pub errors: Errors,
    pub seconds: f64,
    pub note: Option<String>,
}

impl Samples {
    fn note(mut self, note: impl Into<String>) -> Samples {
        self.note = Some(note.into());
        self
    }
}

fn row(variant: &str, n: u64, samples: &[f64], errors: &Errors, began: Instant) -> Samples {
    Samples {
        variant: variant.to_owned(),
        n,
        ms: samples.to_vec(),
        errors: errors.clone(),
        seconds: began.elapsed().as_secs_f64(),
        note: None,
    }
}

/// The rows of this section (median, p90, p99, max) from every block's samples, in the
/// order the measures first came.
pub fn rows(blocks: Vec<Vec<Samples>>) -> Vec<Row> {
    let mut merged: Vec<Samples> = Vec::new();
    for s in blocks.into_iter().flatten() {
        match merged
            .iter_mut()
            .find(|m| m.variant == s.variant && m.n == s.n)
        {
            Some(m) => {
                m.ms.extend(s.ms);
                m.errors.merge(&s.errors);
                m.seconds += s.seconds;
                if s.note.is_some() && s.note != m.note {
                    m.note = Some(match m.note.take() {
                        Some(old) => format!("{old}; {}", s.note.unwrap_or_default()),
                        None => s.note.unwrap_or_default(),
                    });
                }
            }
            None => merged.push(s),
        }
    }
    merged
        .into_iter()
        .map(|m| {
            let mut r = Row::new(Section::Console, &m.variant, m.n, Kind::Ours)
                .latencies_p90(&m.ms)
                .errors(&m.errors)
                .seconds(m.seconds);
            r.note = m.note;
            r
        })
        .collect()
}

/// `calls` runs of one `lava-send` over TCP (`tools`, the launcher's binary).
pub fn tcp_send(tools: &Tools, addr: SocketAddr, calls: usize) -> Samples {
    let began = Instant::now();
    let (samples, errors) = tool_timing::send_samples(tools, addr, calls);
    row("tcp lava-send", 1, &samples, &errors, began).note(format!("{}", tools.binary().display()))
}

/// `calls` rounds of a `nodes`-node `lava-sync` over TCP, the processes of a round started
/// together.
pub fn tcp_sync(tools: &Tools, addr: SocketAddr, nodes: usize, calls: usize) -> Samples {
    let began = Instant::now();
    let (samples, errors) =
        tool_timing::sync_samples(tools, addr, nodes, calls, Duration::from_secs(20));
    row("tcp lava-sync", nodes as u64, &samples, &errors, began)
        .note(format!("{}", tools.binary().display()))
}

/// The guests' shell: the launcher's tools first on PATH, over the console. Nothing tells
/// it where the coordinator is.
const GUEST: &str = r#"echo 'bench guest booting'
export PATH="$LOG_DIR/bin:$PATH" LAVA_MULTINODE_TRANSPORT=console LAVA_MULTINODE_TIMEOUT=60
PS1='guest# ' exec sh -i
"#;

/// The loop of every member (guests on the console, the host over TCP): `sh loop.sh N`.
/// One line per call: `BENCHT what i t0 t1`, nanoseconds since the epoch read by `date`
/// just before and just after the call.
const LOOP: &str = r#"n=$1
i=0
while [ "$i" -lt "$n" ]; do
  t0=$(date +%s%N); t1=$(date +%s%N)
  echo "BENCHT clock $i $t0 $t1"
  i=$((i + 1))
done
i=0
while [ "$i" -lt "$n" ]; do
  t0=$(date +%s%N)
  lava-send bench key=value || exit 1
  t1=$(date +%s%N)
  echo "BENCHT send $i $t0 $t1"
  i=$((i + 1))
done
lava-sync bench-start || exit 1
i=0
while [ "$i" -lt "$n" ]; do
  t0=$(date +%s%N)
  lava-sync "bench-$i" || exit 1
  t1=$(date +%s%N)
  echo "BENCHT sync $i $t0 $t1"
  i=$((i + 1))
done
"#;

/// The guests' client names.
const GUESTS: [&str; 2] = ["guests-1", "guests-2"];

/// `(what, i)` -> `(t0, t1)`: nanoseconds since the epoch.
type Timings = BTreeMap<(String, usize), (u128, u128)>;

/// The `BENCHT` lines of `text`.
fn timings(text: &str) -> Timings {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\r');
        let Some(rest) = line.strip_prefix("BENCHT ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let [what, i, t0, t1] = f[..] {
            if let (Ok(i), Ok(t0), Ok(t1)) = (i.parse(), t0.parse(), t1.parse()) {
                out.insert((what.to_owned(), i), (t0, t1));
            }
        }
    }
    out
}

fn ms_between(t0: u128, t1: u128) -> f64 {
    t1.saturating_sub(t0) as f64 / 1e6
}

/// Runs the launcher with the console loop of `calls` calls against `addr` and returns the
/// console rows (and the host's TCP `lava-send` of the same run). At most `limit`: then
/// the launcher's process group is killed and the rows say so.
pub fn over_console(
    launcher: &Path,
    addr: SocketAddr,
    calls: usize,
    limit: Duration,
    progress: &Progress,
) -> Vec<Samples> {
    let began = Instant::now();
    let dir = TempDir::new("bench-console");
    let log_dir = dir.path().join("logs");
    let guest = dir.path().join("guest.sh");
    let script = dir.path().join("loop.sh");
    std::fs::write(&guest, GUEST).expect("write the guest script");
    std::fs::write(&script, LOOP).expect("write the loop script");
    let job = json!({
        "job_name": "lava-bench console",
        "vm_group": {
            "host": {"device_type": "x86_64", "role": "host"},
            "vms": [{
                "device_type": "process",
                "role": "guests",
                "count": GUESTS.len(),
                "shell_prompt": "guest# ",
                "launch_with": [format!("LOG_DIR={{log_dir}} exec sh {}", guest.display())],
                "console_commands": [format!("sh {} {calls}", script.display())],
            }],
        },
    });
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, serde_json::to_string_pretty(&job).unwrap()).expect("write job");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(launcher);
    cmd.arg("vm-group")
        .arg("run")
        .arg(&job_path)
        .args(["--coordinator", &addr.to_string()])
        .args(["--group", &group_name("console")])
        .arg("--log-dir")
        .arg(&log_dir)
        .args(["--boot-timeout", "20"])
        .args(["--timeout", &limit.as_secs().to_string()])
        // The guests would find nothing there: their calls go through the console only.
        .args(["--guest-coordinator", "127.0.0.1:9"])
        .arg("--")
        .arg("sh")
        .arg(&script)
        .arg(calls.to_string());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LAVA_") {
            cmd.env_remove(name);
        }
    }
    use std::os::unix::process::CommandExt;
    cmd.env("LAVA_MULTINODE_CMDLINE", "/nonexistent/cmdline")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("launcher stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("launcher stderr file"))
        .process_group(0);
    let mut errors = Errors::default();
    let mut note = format!("launcher {}", launcher.display());
    match cmd.spawn() {
        Err(e) => {
            errors.add_named("launcher_failed", 1);
            note = format!("{note}: cannot run it: {e}");
        }
        Ok(mut child) => {
            let code = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.code(),
                    Ok(None) if began.elapsed() > limit => {
                        // Its process group: the launcher and its host test; the guests,
                        // in sessions of their own, die with the launcher (PDEATHSIG).
                        let _ = Command::new("kill")
                            .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                            .status();
                        let _ = child.wait();
                        errors.add_named("timed_out", 1);
                        note = format!("{note}: killed after {} s", limit.as_secs());
                        break None;
                    }
                    Ok(None) => {
                        progress.tick(&format!("{:.0} s", began.elapsed().as_secs_f64()));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        errors.add_named("launcher_failed", 1);
                        note = format!("{note}: cannot wait for it: {e}");
                        break None;
                    }
                }
            };
            if code.is_some_and(|c| c != 0) {
                errors.add_named("launcher_failed", 1);
                let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
                let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                note = format!("{note}: exit {}: {}", code.unwrap_or(-1), tail.join(" | "));
            }
        }
    }

    let host = timings(&std::fs::read_to_string(&out_path).unwrap_or_default());
    let guests: Vec<_> = GUESTS
        .iter()
        .map(|g| {
            timings(&std::fs::read_to_string(log_dir.join(format!("{g}.log"))).unwrap_or_default())
        })
        .collect();
    let mut rows = loop_rows("console", &guests, Some(&host), calls, &errors, began);
    let host_send = durations(&host, "send", calls);
    rows.insert(
        2,
        row(
            "host tcp lava-send",
            1,
            &host_send,
            &missing(host_send.len(), calls, &errors),
            began,
        ),
    );
    if errors.total() > 0 {
        for r in &mut rows {
            r.note = Some(note.clone());
        }
    }
    rows
}

fn durations(of: &Timings, what: &str, calls: usize) -> Vec<f64> {
    (0..calls)
        .filter_map(|i| of.get(&(what.to_owned(), i)))
        .map(|&(t0, t1)| ms_between(t0, t1))
        .collect()
}

fn missing(got: usize, expected: usize, errors: &Errors) -> Errors {
    let mut e = errors.clone();
    if got < expected {
        e.add_named("missing_sample", (expected - got) as u64);
    }
    e
}

/// The rows of one run of the loop: `timed` members (their clock and `lava-send` rows)
/// and `other` (synced with them, if any), `prefix` naming the rows. A sync round: from the last
/// member's call (the one that completes it) to the last member's exit; and from the first
/// member's call to the last member's exit.
fn loop_rows(
    prefix: &str,
    timed: &[Timings],
    other: Option<&Timings>,
    calls: usize,
    errors: &Errors,
    began: Instant,
) -> Vec<Samples> {
    let (mut clock, mut send) = (Vec::new(), Vec::new());
    for m in timed {
        clock.extend(durations(m, "clock", calls));
        send.extend(durations(m, "send", calls));
    }
    let members = timed.len() + usize::from(other.is_some());
    let (mut last_call, mut round) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let key = ("sync".to_owned(), i);
        let got: Vec<(u128, u128)> = other
            .into_iter()
            .chain(timed)
            .filter_map(|m| m.get(&key).copied())
            .collect();
        if got.len() < members {
            continue;
        }
        let first = got.iter().map(|m| m.0).min().unwrap_or(0);
        let last = got.iter().map(|m| m.0).max().unwrap_or(0);
        let end = got.iter().map(|m| m.1).max().unwrap_or(0);
        last_call.push(ms_between(last, end));
        round.push(ms_between(first, end));
    }
    let expected = calls * timed.len();
    let n = members as u64;
    vec![
        row(
            &format!("{prefix} clock"),
            0,
            &clock,
            &missing(clock.len(), expected, errors),
            began,
        ),
        row(
            &format!("{prefix} lava-send"),
            1,
            &send,
            &missing(send.len(), expected, errors),
            began,
        ),
        row(
            &format!("{prefix} lava-sync"),
            n,
            &last_call,
            &missing(last_call.len(), calls, errors),
            began,
        ),
        row(
            &format!("{prefix} lava-sync round"),
            n,
            &round,
            &missing(round.len(), calls, errors),
            began,
        ),
    ]
}

/// The same loop, timed the same way, with `members` shells over TCP only (a group of
/// `members`, started together): what the console rows compare with, call for call.
pub fn tcp_loop(
    tools: &Tools,
    addr: SocketAddr,
    members: usize,
    calls: usize,
    limit: Duration,
) -> Vec<Samples> {
    let began = Instant::now();
    let dir = TempDir::new("bench-console-tcp");
    let script = dir.path().join("loop.sh");
    std::fs::write(&script, LOOP).expect("write the loop script");
    let (conf, cmdline) = (dir.path().join("conf"), dir.path().join("cmdline"));
    std::fs::write(&conf, "").expect("write an empty conf");
    std::fs::write(&cmdline, "").expect("write an empty cmdline");
    let group = group_name("console-tcp");
    let path = match std::env::var_os("PATH") {
        Some(p) => format!("{}:{}", tools.dir().display(), p.to_string_lossy()),
        None => tools.dir().display().to_string(),
    };
    let mut errors = Errors::default();
    let mut children = Vec::new();
    for m in 0..members {
        let out = dir.path().join(format!("node{m}.out"));
        let mut cmd = Command::new("sh");
        cmd.arg(&script).arg(calls.to_string());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAVA_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("PATH", &path)
            .env("LAVA_MULTINODE_COORDINATOR", addr.to_string())
            .env("LAVA_MULTINODE_GROUP", &group)
            .env("LAVA_MULTINODE_CLIENT", format!("node{m}"))
            .env("LAVA_MULTINODE_ROLE", "node")
            .env("LAVA_MULTINODE_GROUP_SIZE", members.to_string())
            .env("LAVA_MULTINODE_TIMEOUT", "20")
            .env("LAVA_MULTINODE_CONF", &conf)
            .env("LAVA_MULTINODE_CMDLINE", &cmdline)
            .env(
                "LAVA_MULTI_NODE_CACHE",
                dir.path().join(format!("node{m}.cache")),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("loop output file"))
            .stderr(Stdio::null());
        match cmd.spawn() {
            Ok(c) => children.push((c, out)),
            Err(_) => errors.add_named("tool_failed", 1),
        }
    }
    let mut outputs = Vec::new();
    if children.len() < members {
        return loop_rows("tcp shell", &[], None, calls, &errors, began);
    }
    for (mut child, out) in children {
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if began.elapsed() > limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    errors.add_named("timed_out", 1);
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        if !status.is_some_and(|s| s.success()) {
            errors.add_named("tool_failed", 1);
        }
        outputs.push(timings(&std::fs::read_to_string(&out).unwrap_or_default()));
    }
    loop_rows("tcp shell", &outputs, None, calls, &errors, began)
}

/// What a row of this section measures, for the table.
pub fn label(row: &Row) -> String {
    let n = row.n;
    match row.variant.as_str() {
        "tcp lava-send" => "TCP, bench-timed: one lava-send process".into(),
        "tcp lava-sync" => format!(
            "TCP, bench-timed: {n}-node lava-sync, processes started together, to the last exit"
        ),
        "tcp shell clock" => "TCP shell loop: the clock itself (two `date`)".into(),
        "tcp shell lava-send" => "TCP shell loop: one lava-send".into(),
        "tcp shell lava-sync" => {
            format!("TCP shell loop: lava-sync, {n} members, last call to last exit")
        }
        "tcp shell lava-sync round" => {
            format!("TCP shell loop: lava-sync, {n} members, first call to last exit")
        }
        "console clock" => "console: the clock itself (two `date` in a guest)".into(),
        "console lava-send" => {
            "console: one lava-send in a guest (returns once the marker is printed)".into()
        }
        "host tcp lava-send" => "console run, its host over TCP: one lava-send".into(),
        "console lava-sync" => format!(
            "console: lava-sync, {n} members ({} on the console), last call to last exit",
            n.saturating_sub(1)
        ),
        "console lava-sync round" => format!(
            "console: lava-sync, {n} members ({} on the console), first call to last exit",
            n.saturating_sub(1)
        ),
        v => format!("console section: {v}"),
    }
}

/// The figures of a row: median / p90 / max (ms).
fn figures(row: &Row) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let err = if row.errors > 0 {
        format!(" [{} err]", row.errors)
    } else {
        String::new()
    };
    format!(
        "{} / {} / {} ({}){err}",
        f(row.median_ms),
        f(row.p90_ms),
        f(row.max_ms),
        row.samples
    )
}

/// The section's block of the table: every row, then console against TCP.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.section == Section::Console)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nThe MultiNode API over the console (ours, durable state): median / p90 / max ms (samples)\n",
    );
    let labels: Vec<String> = rows.iter().map(|r| label(r)).collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    for (r, l) in rows.iter().zip(&labels) {
        let _ = writeln!(out, "  {l:<width$}  {}", figures(r));
    }
    let find = |variant: &str, n: u64| rows.iter().find(|r| r.variant == variant && r.n == n);
    let ratio = |a: Option<&&Row>, b: Option<&&Row>| -> Option<(f64, f64)> {
        let (a, b) = (a?, b?);
        Some((a.median_ms? / b.median_ms?, a.p90_ms? / b.p90_ms?))
    };
    let pairs = [
        (
            "lava-send, against the TCP shell loop",
            find("console lava-send", 1),
            find("tcp shell lava-send", 1),
        ),
        (
            "lava-send, against the bench-timed TCP process",
            find("console lava-send", 1),
            find("tcp lava-send", 1),
        ),
        (
            "3-member lava-sync, against the TCP shell loop",
            find("console lava-sync", 3),
            find("tcp shell lava-sync", 3),
        ),
        (
            "3-member lava-sync round, against the TCP shell loop",
            find("console lava-sync round", 3),
            find("tcp shell lava-sync round", 3),
        ),
        (
            "3-member lava-sync, against the bench-timed 3-node TCP sync",
            find("console lava-sync", 3),
            find("tcp lava-sync", 3),
        ),
        (
            "3-member lava-sync, against the bench-timed 2-node TCP sync",
            find("console lava-sync", 3),
            find("tcp lava-sync", 2),
        ),
    ];
    for (what, console, tcp) in pairs {
        if let Some((m, p)) = ratio(console, tcp) {
            let _ = writeln!(out, "  console / TCP, {what}: median {m:.2}x, p90 {p:.2}x");
        }
    }
    out
}

/// Default launcher: the workspace's host build.
pub fn default_launcher() -> PathBuf {
    super::servers::workspace_binary("lava-multinode")
}
