//! Scenario 3: a hostile mix beside good groups. Threads send bad frames, half-sent bodies,
//! resets, idle and stalled connections, oversized headers, deep JSON; one address
//! (127.0.0.2) opens more connections than `max_connections_per_address`; meanwhile good
//! groups run their scripts and `status` is asked every 100 ms. Invariants: the good groups
//! finish with the replies of a calm run, every bad request that can be answered gets a
//! `nack`, `status` answers within 2 s, the coordinator does not crash.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::storm::{self, GiveUp, RunSpec, Style};
use super::{
    connect_from, frame, max_ms, quantile_ms, raw, reset, status, Coord, Opts, Outcome, Rng,
};

const PER_ADDRESS: usize = 256;
const STATUS_BOUND: Duration = Duration::from_secs(2);

/// What a bad connection should get.
enum Expect {
    /// A `nack` whose text contains this.
    Nack(&'static str),
}

const KINDS: &[&str] = &[
    "bad-header",
    "bad-json",
    "not-utf8",
    "truncated-body",
    "oversized-header",
    "deep-json",
    "deep-message",
    "wrong-type",
    "unknown-request",
    "empty-object",
    "array-body",
    "huge-number",
    "nul-in-json",
    "reset-mid-header",
    "reset-mid-body",
    "close-at-once",
    "half-sent-abandoned",
    "idle",
    "stalled-large-body",
];

/// Connections kept open by the idle and stalled kinds.
struct Pool {
    idle: Vec<TcpStream>,
    stalled: Vec<TcpStream>,
    idle_max: usize,
    stalled_max: usize,
}

/// One bad connection of `kind`; `Err` names a violation.
fn bad(addr: &str, kind: &str, pool: &Mutex<Pool>) -> Result<(), String> {
    let t = Duration::from_secs(10);
    let (bytes, expect): (Vec<u8>, Expect) = match kind {
        "bad-header" => (b"zzzzzzzz{}".to_vec(), Expect::Nack("")),
        "bad-json" => (frame(b"abc"), Expect::Nack("")),
        "not-utf8" => (frame(&[0xff, 0xfe, 0xfd, 0x7b]), Expect::Nack("")),
        "truncated-body" => (b"00000064{\"request\"".to_vec(), Expect::Nack("")),
        "oversized-header" => (b"FFFFFFFF{}".to_vec(), Expect::Nack("over the limit of 1048576")),
        "deep-json" => {
            let mut b = vec![b'['; 50_000];
            b.extend(vec![b']'; 50_000]);
            (frame(&b), Expect::Nack(""))
        }
        "deep-message" => {
            let message = (0..40).fold(json!("v"), |inner, _| json!({ "k": inner }));
            let body = json!({"request": "lava_send", "group_name": "hostile-deep",
                "client_name": "x", "role": "r", "group_size": 2, "messageID": "m",
                "message": message});
            (frame(body.to_string().as_bytes()), Expect::Nack("message"))
        }
        "wrong-type" => (
            frame(br#"{"request": "lava_send", "group_name": 5, "client_name": ["x"], "messageID": {}}"#),
            Expect::Nack(""),
        ),
        "unknown-request" => (
            frame(br#"{"request": "frobnicate", "group_name": "hostile", "client_name": "x"}"#),
            Expect::Nack(""),
        ),
        "empty-object" => (frame(b"{}"), Expect::Nack("")),
        "array-body" => (frame(b"[1, 2, 3]"), Expect::Nack("")),
        "huge-number" => (
            frame(br#"{"request": "group_data", "group_name": "hostile-n", "client_name": "x", "role": "r", "group_size": 1e400}"#),
            Expect::Nack(""),
        ),
        "nul-in-json" => (frame(b"{\"request\": \0}"), Expect::Nack("")),
        "reset-mid-header" | "reset-mid-body" => {
            let mut s = TcpStream::connect(addr).map_err(|e| format!("{kind}: connect: {e}"))?;
            let part: &[u8] = if kind == "reset-mid-header" {
                b"0000"
            } else {
                b"00000100{\"request\": \"lava_"
            };
            let _ = s.write_all(part);
            thread::sleep(Duration::from_millis(5));
            reset(s);
            return Ok(());
        }
        "close-at-once" => {
            drop(TcpStream::connect(addr).map_err(|e| format!("{kind}: connect: {e}"))?);
            return Ok(());
        }
        "half-sent-abandoned" => {
            let mut s = TcpStream::connect(addr).map_err(|e| format!("{kind}: connect: {e}"))?;
            let _ = s.write_all(b"00000040{\"request\": \"status\"");
            drop(s);
            return Ok(());
        }
        "idle" | "stalled-large-body" => {
            let mut p = pool.lock().unwrap();
            let full = if kind == "idle" {
                p.idle.len() >= p.idle_max
            } else {
                p.stalled.len() >= p.stalled_max
            };
            if full {
                return Ok(());
            }
            let mut s = TcpStream::connect(addr).map_err(|e| format!("{kind}: connect: {e}"))?;
            if kind == "idle" {
                p.idle.push(s);
            } else {
                let _ = s.write_all(b"00100000");
                s.set_nonblocking(true).ok();
                let _ = s.write(&vec![b' '; 64 << 10]);
                p.stalled.push(s);
            }
            return Ok(());
        }
        _ => unreachable!("{kind}"),
    };
    let reply = raw(addr, &bytes, true, t).map_err(|e| format!("{kind}: {e}"))?;
    let Expect::Nack(word) = expect;
    let text = String::from_utf8_lossy(&reply);
    if text.contains("\"nack\"") && text.contains(word) {
        Ok(())
    } else {
        Err(format!("{kind}: no nack naming {word:?}: {text:.200}"))
    }
}

pub fn run(opts: &Opts) -> Outcome {
    let name = "hostile";
    let (groups, n, rounds, threads, hog, idle_max, stalled_max): (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    ) = if opts.large {
        (10, 4, 30, 4, 612, 100, 40)
    } else {
        (4, 3, 10, 2, 300, 40, 20)
    };
    let fail = |line: String| Outcome {
        name,
        violations: 1,
        known: 0,
        line,
        details: vec![],
    };
    let dir = lava_multinode_tests::TempDir::new("soak-hostile");
    let config =
        format!(r#"{{"max_connections": 512, "max_connections_per_address": {PER_ADDRESS}}}"#);
    let mut coord = match Coord::start(
        &opts.coordinator,
        dir.path(),
        &dir.path().join("state.db"),
        &config,
    ) {
        Ok(c) => c,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    let addr = coord.addr.clone();
    let spec = RunSpec {
        style: Style::Tools,
        n,
        rounds,
        think_ms: 100,
        seed: opts.seed,
        give_up: GiveUp::new(Duration::from_secs(60)),
        lease: 10.0,
    };
    let expected = match storm::calm_replies(&addr, "calm", &spec) {
        Ok(e) => e,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    // The good groups once in calm, for the slowdown figure.
    let calm_spec = RunSpec {
        give_up: GiveUp::new(Duration::from_secs(60)),
        ..spec.clone()
    };
    calm_spec.give_up.start();
    let t = Instant::now();
    let calm_runs = storm::run_groups(&addr, "calm-good", groups, &calm_spec);
    let calm_time = t.elapsed();
    let _ = storm::check(&addr, &calm_runs, &expected);

    let mut details = Vec::new();
    // The hog: more connections from 127.0.0.2 than it may hold, each stalled after 4 bytes.
    let mut hogs = Vec::new();
    for _ in 0..hog {
        match connect_from([127, 0, 0, 2], coord.port) {
            Ok(mut s) => {
                let _ = s.write_all(b"0000");
                hogs.push(s);
            }
            Err(e) => {
                details.push(format!("hog: cannot connect from 127.0.0.2: {e}"));
                break;
            }
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    // Status every 100 ms.
    let prober = {
        let (addr, done) = (addr.clone(), done.clone());
        thread::spawn(move || {
            let mut times = Vec::new();
            let mut problems = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                match status(&addr, Duration::from_secs(10)) {
                    Ok(_) if t.elapsed() <= STATUS_BOUND => {}
                    Ok(_) => problems.push(format!("status took {:?}", t.elapsed())),
                    Err(e) => problems.push(format!("status failed after {:?}: {e}", t.elapsed())),
                }
                times.push(t.elapsed());
                thread::sleep(Duration::from_millis(100));
            }
            (times, problems)
        })
    };
    let pool = Arc::new(Mutex::new(Pool {
        idle: Vec::new(),
        stalled: Vec::new(),
        idle_max,
        stalled_max,
    }));
    let attackers: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, done, pool) = (addr.clone(), done.clone(), pool.clone());
            let mut rng = Rng::fork(opts.seed, 0xBAD0 + t as u64);
            thread::spawn(move || {
                let mut tried: BTreeMap<&'static str, usize> = BTreeMap::new();
                let mut problems = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let kind = KINDS[rng.range(0, KINDS.len() as u64 - 1) as usize];
                    *tried.entry(kind).or_default() += 1;
                    if let Err(e) = bad(&addr, kind, &pool) {
                        problems.push(e);
                    }
                }
                (tried, problems)
            })
        })
        .collect();
    // The good groups, beside all that.
    spec.give_up.start();
    let t = Instant::now();
    let runs = storm::run_groups(&addr, "good", groups, &spec);
    let good_time = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut tried: BTreeMap<&'static str, usize> = BTreeMap::new();
    for a in attackers {
        let (t, problems) = a.join().expect("attacker");
        for (k, v) in t {
            *tried.entry(k).or_default() += v;
        }
        details.extend(problems);
    }
    let (status_times, status_problems) = prober.join().expect("prober");
    let checked = storm::check(&addr, &runs, &expected);
    // The hog's connections over its bound were told so at once.
    let mut refused = 0;
    for s in &mut hogs {
        s.set_read_timeout(Some(Duration::from_millis(20))).ok();
        let mut reply = Vec::new();
        let _ = std::io::Read::read_to_end(s, &mut reply);
        if String::from_utf8_lossy(&reply).contains("max_connections_per_address") {
            refused += 1;
        }
    }
    let expect_refused = hog.saturating_sub(PER_ADDRESS);
    let hog_bad = refused != expect_refused;
    if hog_bad {
        details.push(format!(
            "hog: {refused} of {hog} connections refused naming max_connections_per_address, expected {expect_refused}"
        ));
    }
    drop(hogs);
    let (idle_n, stalled_n) = {
        let mut p = pool.lock().unwrap();
        let r = (p.idle.len(), p.stalled.len());
        p.idle.clear();
        p.stalled.clear();
        r
    };
    let running = coord.running();
    let after = status(&addr, Duration::from_secs(5));
    if !running || after.is_err() {
        details.push(format!(
            "the coordinator is not running or not answering at the end: {after:?}"
        ));
    }
    let over_limit = after
        .as_ref()
        .map(|s| s["counters"]["over_limit"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    let bad_input = after
        .as_ref()
        .map(|s| s["counters"]["bad_input"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    let nack_problems = details.len() - usize::from(hog_bad);
    details.extend(status_problems.iter().cloned());
    details.extend(checked.stranded.iter().cloned());
    details.extend(checked.violations.iter().cloned());
    let violations = details.len();
    let bad_total: usize = tried.values().sum();
    let log_lines = coord.log_text().lines().count();
    coord.kill9();
    let line = format!(
        "load {groups} good groups x {n} nodes, {rounds} rounds, {} calls, beside {bad_total} bad connections \
         of {} kinds ({}), {hog} connections from 127.0.0.2 (max_connections_per_address {PER_ADDRESS}), \
         up to {idle_n} idle and {stalled_n} stalled 1 MiB bodies held; violations {violations} \
         (bad requests without their nack {nack_problems}, hog refusals wrong {}, status over {:?} or failed {}, \
         good nodes stranded {}, replies differing / lost sends {}, coordinator down {}); \
         figures: good nodes finished {}/{}, acknowledged sends kept {}/{}, good groups {:.2} s vs {:.2} s calm ({:.1}x), \
         status median {:.1} ms p99 {:.1} ms max {:.0} ms ({} probes), hog refused {refused}/{expect_refused} at once, \
         counters bad_input {bad_input} over_limit {over_limit}, {log_lines} log lines",
        checked.logical,
        tried.len(),
        tried
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        usize::from(hog_bad),
        STATUS_BOUND,
        status_problems.len(),
        checked.stranded.len(),
        checked.violations.len(),
        usize::from(!running || after.is_err()),
        checked.finished,
        checked.nodes,
        checked.kept,
        checked.acked,
        good_time.as_secs_f64(),
        calm_time.as_secs_f64(),
        good_time.as_secs_f64() / calm_time.as_secs_f64().max(1e-3),
        quantile_ms(&status_times, 0.5),
        quantile_ms(&status_times, 0.99),
        max_ms(&status_times),
        status_times.len(),
    );
    Outcome {
        name,
        violations,
        known: 0,
        line,
        details,
    }
}
