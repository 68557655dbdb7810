//! Scenarios 1 and 2: groups of nodes run send/wait/sync scripts while the coordinator is
//! killed with SIGKILL and restarted on its state file every 1-4 s (seeded). Scenario 1 calls
//! as our tools do (`block` slices, `request_id`, a lease); scenario 2 as LAVA's client does
//! (no `block`, no `request_id`, a poll every 10-50 ms). Also the good groups of the hostile
//! mix (scenario 3) run these scripts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lava_protocol::{Client, Reply, Request, RequestKind, Response};
use serde_json::{json, Value};

use super::{max_ms, quantile_ms, Coord, Opts, Outcome, Rng};

#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    /// Our tools: `block` 1 s slices, the same `request_id` across retries, a 10 s lease.
    Tools,
    /// LAVA's client: no `block`, no `request_id`; `wait`, an error or no reply: ask again
    /// after the node's poll delay.
    Polling,
}

/// The script of node `i` of a group of `n`, `rounds` rounds: the start barrier; per round
/// a message from everyone, one from the round's leader that everyone waits for, a sync (the
/// same id every round), a wait for everyone's message; a last sync.
pub fn script(i: usize, n: usize, rounds: usize) -> Vec<RequestKind> {
    let mut s = vec![RequestKind::GroupData];
    for k in 0..rounds {
        s.push(RequestKind::Send {
            id: format!("m{k}"),
            message: json!({"node": i, "round": k, "text": format!("n{i} r{k} é")}),
        });
        if i == k % n {
            s.push(RequestKind::Send {
                id: format!("lead{k}"),
                message: json!({"leader": i, "round": k}),
            });
        }
        s.push(RequestKind::Wait {
            id: format!("lead{k}"),
        });
        s.push(RequestKind::Sync {
            id: "s".into(),
            message: json!({}),
        });
        s.push(RequestKind::WaitAll {
            id: format!("m{k}"),
            role: None,
        });
    }
    s.push(RequestKind::Sync {
        id: "done".into(),
        message: json!({"node": i}),
    });
    s
}

fn role(i: usize) -> &'static str {
    if i == 0 {
        "server"
    } else {
        "client"
    }
}

/// Replies whose order depends on timing (members in registration order, senders in the
/// order they sent) put in a fixed order.
pub fn normalise(mut reply: Reply) -> Reply {
    if let Some(roles) = &mut reply.roles {
        roles.sort_keys();
    }
    if let Some(Value::Object(senders)) = &mut reply.message {
        senders.sort_keys();
    }
    reply
}

/// What one node did.
pub struct NodeRun {
    pub replies: Vec<Reply>,
    /// (first attempt, reply) of each sync call, in order.
    pub syncs: Vec<(Instant, Instant)>,
    pub finished: bool,
    /// Where it gave up, when it did not finish.
    pub stuck_at: Option<String>,
    pub attempts: u64,
    /// Sends answered `ack`: (id, data).
    pub acked: Vec<(String, Value)>,
    /// How long each send took, retries included.
    pub send_latency: Vec<Duration>,
    /// Calls, and sync calls, that a fault hit: an attempt failed (no connection, no
    /// reply) and the call was made again.
    pub hit: usize,
    pub syncs_hit: usize,
}

/// Knobs of a group run.
#[derive(Clone)]
pub struct RunSpec {
    pub style: Style,
    pub n: usize,
    pub rounds: usize,
    /// Longest pause between two steps of a node, ms (uniform from 0).
    pub think_ms: u64,
    pub seed: u64,
    /// Nodes give up once this is set and `grace` has passed since.
    pub give_up: Arc<GiveUp>,
    /// The lease our tools' calls carry, seconds.
    pub lease: f64,
}

/// The fault a storm injects every 1-4 s.
#[derive(Clone, Copy, PartialEq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same state file.
    Kill,
    /// SIGSTOP for 3-6 s (4-9 s at the large size), then SIGCONT: the coordinator itself
    /// does not run, while its clients keep renewing their leases (issue 15, finding 9).
    Freeze,
}

/// Set when the faults are over: from then on a node has `grace` to finish.
pub struct GiveUp {
    pub since: Mutex<Option<Instant>>,
    pub grace: Duration,
}

impl GiveUp {
    pub fn new(grace: Duration) -> Arc<Self> {
        Arc::new(GiveUp {
            since: Mutex::new(None),
            grace,
        })
    }
    pub fn start(&self) {
        self.since.lock().unwrap().get_or_insert(Instant::now());
    }
    fn expired(&self) -> bool {
        self.since
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() > self.grace)
    }
}

/// Runs node `i` of `group`.
pub fn run_node(addr: &str, group: &str, i: usize, spec: &RunSpec) -> NodeRun {
    let client = Client::new(addr.to_owned())
        .with_connect_timeout(Duration::from_millis(500))
        .with_io_timeout(Duration::from_secs(5));
    let name = format!("n{i}");
    let mut rng = Rng::fork(spec.seed, {
        let mut h = 0u64;
        for b in group.bytes() {
            h = h.wrapping_mul(31).wrapping_add(b as u64);
        }
        h.wrapping_mul(1000) + i as u64
    });
    let poll_delay = Duration::from_millis(rng.range(10, 50));
    let mut run = NodeRun {
        replies: Vec::new(),
        syncs: Vec::new(),
        finished: false,
        stuck_at: None,
        attempts: 0,
        acked: Vec::new(),
        send_latency: Vec::new(),
        hit: 0,
        syncs_hit: 0,
    };
    for (step, kind) in script(i, spec.n, spec.rounds).into_iter().enumerate() {
        if spec.think_ms > 0 {
            thread::sleep(Duration::from_millis(rng.range(0, spec.think_ms)));
        }
        let what = format!("{} step {step}", kind.name());
        let mut req = Request::new(group, &name, role(i), kind.clone());
        req.group_size = Some(spec.n as u32);
        req.hostname = Some("soak".into());
        if spec.style == Style::Tools {
            req.block = Some(1.0);
            req.request_id = Some(format!("{name}-{step}"));
            req.lease = Some(spec.lease);
        }
        let start = Instant::now();
        let mut failed_attempt = false;
        let reply = loop {
            if spec.give_up.expired() {
                break None;
            }
            run.attempts += 1;
            match client.call(&req) {
                Ok(r) if r.is_wait() => {
                    if spec.style == Style::Polling {
                        thread::sleep(poll_delay);
                    }
                }
                Ok(r) => break Some(r),
                Err(e) if e.is_transient() => {
                    failed_attempt = true;
                    thread::sleep(match spec.style {
                        Style::Polling => poll_delay,
                        Style::Tools => Duration::from_millis(20),
                    })
                }
                Err(e) => break Some(Reply::nack(format!("client error: {e}"))),
            }
        };
        let Some(reply) = reply else {
            run.stuck_at = Some(what);
            return run;
        };
        let end = Instant::now();
        if failed_attempt {
            run.hit += 1;
            if matches!(kind, RequestKind::Sync { .. }) {
                run.syncs_hit += 1;
            }
        }
        match &kind {
            RequestKind::Sync { .. } => run.syncs.push((start, end)),
            RequestKind::Send { id, message } if reply.response == Response::Ack => {
                run.acked.push((id.clone(), message.clone()));
                run.send_latency.push(end - start);
            }
            _ => {}
        }
        run.replies.push(normalise(reply));
    }
    run.finished = true;
    run
}

/// Runs `groups` groups (named `prefix-G`) at once; each group's node runs, in order.
pub fn run_groups(
    addr: &str,
    prefix: &str,
    groups: usize,
    spec: &RunSpec,
) -> Vec<(String, Vec<NodeRun>)> {
    let handles: Vec<_> = (0..groups)
        .map(|g| {
            let group = format!("{prefix}-{g}");
            let nodes: Vec<_> = (0..spec.n)
                .map(|i| {
                    let addr = addr.to_owned();
                    let group = group.clone();
                    let spec = spec.clone();
                    thread::spawn(move || run_node(&addr, &group, i, &spec))
                })
                .collect();
            (group, nodes)
        })
        .collect();
    handles
        .into_iter()
        .map(|(group, nodes)| {
            (
                group,
                nodes
                    .into_iter()
                    .map(|h| h.join().expect("node thread"))
                    .collect(),
            )
        })
        .collect()
}

/// The invariants over a finished run: what went wrong, and counts.
pub struct Checked {
    pub violations: Vec<String>,
    pub finished: usize,
    pub nodes: usize,
    pub stranded: Vec<String>,
    pub acked: usize,
    pub kept: usize,
    pub attempts: u64,
    pub logical: usize,
    pub syncs_checked: usize,
    pub send_latency: Vec<Duration>,
    pub hit: usize,
    pub syncs_hit: usize,
}

/// Checks a run against the replies of an uninterrupted one (`expected[i]`: node i's), no
/// sync released before every node arrived, and every acknowledged send still there (read
/// back through `addr`; the groups are cleared afterwards).
pub fn check(addr: &str, runs: &[(String, Vec<NodeRun>)], expected: &[Vec<Reply>]) -> Checked {
    let mut c = Checked {
        violations: Vec::new(),
        finished: 0,
        nodes: 0,
        stranded: Vec::new(),
        acked: 0,
        kept: 0,
        attempts: 0,
        logical: 0,
        syncs_checked: 0,
        send_latency: Vec::new(),
        hit: 0,
        syncs_hit: 0,
    };
    let client = Client::new(addr.to_owned()).with_io_timeout(Duration::from_secs(10));
    for (group, nodes) in runs {
        let n = nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            c.nodes += 1;
            c.attempts += node.attempts;
            c.logical += node.replies.len();
            c.send_latency.extend(&node.send_latency);
            c.hit += node.hit;
            c.syncs_hit += node.syncs_hit;
            if node.finished {
                c.finished += 1;
            } else {
                c.stranded.push(format!(
                    "{group}/n{i} stranded at {}",
                    node.stuck_at.as_deref().unwrap_or("?")
                ));
            }
            // Replies: equal to the calm run's, as far as the node got.
            for (step, (got, want)) in node.replies.iter().zip(&expected[i]).enumerate() {
                if got != want {
                    c.violations.push(format!(
                        "{group}/n{i} step {step}: got {got:?}, an uninterrupted run got {want:?}"
                    ));
                    break;
                }
            }
        }
        // No sync left before every node had arrived: a node's reply before another's first
        // attempt is an early release.
        let rounds = nodes.iter().map(|r| r.syncs.len()).min().unwrap_or(0);
        for k in 0..rounds {
            c.syncs_checked += 1;
            let last_arrival = nodes.iter().map(|r| r.syncs[k].0).max().unwrap();
            let first_release = nodes.iter().map(|r| r.syncs[k].1).min().unwrap();
            if first_release < last_arrival {
                c.violations.push(format!(
                    "{group}: sync round {k} released a node {:?} before the last one arrived",
                    last_arrival - first_release
                ));
            }
        }
        // Every acknowledged send is still there.
        let mut by_id: BTreeMap<&str, Vec<(usize, &Value)>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for (id, data) in &node.acked {
                by_id.entry(id).or_default().push((i, data));
            }
        }
        for (id, senders) in by_id {
            c.acked += senders.len();
            let mut req = Request::new(group, "n0", role(0), RequestKind::Wait { id: id.into() });
            req.group_size = Some(n as u32);
            match client.call(&req) {
                Ok(r) if r.response == Response::Ack => {
                    let msg = r.message.unwrap_or(Value::Null);
                    for (i, data) in senders {
                        if msg.get(format!("n{i}")) == Some(data) {
                            c.kept += 1;
                        } else {
                            c.violations.push(format!(
                                "{group}: n{i}'s acknowledged send {id} is gone: {msg:.200}"
                            ));
                        }
                    }
                }
                other => c.violations.push(format!(
                    "{group}: the acknowledged sends of {id} cannot be read: {other:?}"
                )),
            }
        }
        for i in 0..n {
            let mut req = Request::new(group, &format!("n{i}"), role(i), RequestKind::ClearGroup);
            req.group_size = Some(n as u32);
            let _ = client.call(&req);
        }
    }
    c
}

/// The replies of an uninterrupted run of one group, per node.
pub fn calm_replies(addr: &str, prefix: &str, spec: &RunSpec) -> Result<Vec<Vec<Reply>>, String> {
    let mut calm = spec.clone();
    calm.think_ms = 0;
    calm.give_up = GiveUp::new(Duration::from_secs(30));
    calm.give_up.start();
    let runs = run_groups(addr, prefix, 1, &calm);
    let (group, nodes) = runs.into_iter().next().unwrap();
    let mut out = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        if !node.finished {
            return Err(format!("the calm run of {group} did not finish (n{i})"));
        }
        if let Some(r) = node.replies.iter().find(|r| r.response == Response::Nack) {
            return Err(format!("the calm run of {group}: n{i} got {r:?}"));
        }
        out.push(node.replies);
    }
    // And clear it.
    let client = Client::new(addr.to_owned());
    for i in 0..spec.n {
        let mut req = Request::new(&group, &format!("n{i}"), role(i), RequestKind::ClearGroup);
        req.group_size = Some(spec.n as u32);
        let _ = client.call(&req);
    }
    Ok(out)
}

/// Kills (or freezes) the coordinator every 1-4 s (seeded) until `count` faults or `stop`;
/// measures each restart's (or thaw's) time to answer `status`.
fn injector(
    coord: Arc<Mutex<Coord>>,
    fault: Fault,
    count: usize,
    large: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<Duration>, Vec<String>) {
    let mut rng = Rng::fork(seed, 0xC0FFEE);
    let mut faults = 0;
    let mut ready = Vec::new();
    let mut problems = Vec::new();
    while faults < count {
        let pause = Duration::from_millis(rng.range(1000, 4000));
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut c = coord.lock().unwrap();
        faults += 1;
        match fault {
            Fault::Kill => {
                c.kill9();
                if let Err(e) = c.spawn() {
                    problems.push(e);
                    break;
                }
            }
            Fault::Freeze => {
                let Some(pid) = c.child.as_ref().map(|c| c.id()) else {
                    problems.push("no coordinator to freeze".into());
                    break;
                };
                let hold = if large {
                    rng.range(4000, 9000)
                } else {
                    rng.range(3000, 6000)
                };
                super::signal(pid, 19); // SIGSTOP
                thread::sleep(Duration::from_millis(hold));
                super::signal(pid, 18); // SIGCONT
            }
        }
        match c.wait_ready(Duration::from_secs(20)) {
            Some(t) => ready.push(t),
            None => {
                problems.push(format!(
                    "after fault {faults} it did not answer within 20 s: {:.1000}",
                    c.log_text()
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
                break;
            }
        }
    }
    (faults, ready, problems)
}

/// Scenario 1 (`Style::Tools`, `Fault::Kill`), 2 (`Style::Polling`, `Fault::Kill`), or
/// the freezes (`Style::Tools`, `Fault::Freeze`, with a 2 s lease).
pub fn crash_storm(opts: &Opts, style: Style, fault: Fault) -> Outcome {
    let name = match (style, fault) {
        (Style::Tools, Fault::Kill) => "crash-tools",
        (Style::Polling, _) => "crash-polling",
        (Style::Tools, Fault::Freeze) => "freeze",
    };
    let (groups, n, rounds, mut crashes, think) = if opts.large {
        (40, 4, 24, 12, 400)
    } else {
        (8, 3, 12, 4, 300)
    };
    let lease = if fault == Fault::Freeze {
        crashes = if opts.large { 6 } else { 2 };
        2.0
    } else {
        10.0
    };
    let fail = |line: String| Outcome {
        name,
        violations: 1,
        known: 0,
        line,
        details: vec![],
    };
    let dir = lava_multinode_tests::TempDir::new("soak-storm");
    let coord = match Coord::start(
        &opts.coordinator,
        dir.path(),
        &dir.path().join("state.db"),
        "{}",
    ) {
        Ok(c) => c,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    let addr = coord.addr.clone();
    let spec = RunSpec {
        style,
        n,
        rounds,
        think_ms: think,
        seed: opts.seed,
        give_up: GiveUp::new(Duration::from_secs(if opts.large { 60 } else { 30 })),
        lease,
    };
    let expected = match calm_replies(&addr, "calm", &spec) {
        Ok(e) => e,
        Err(e) => return fail(format!("violations 1: {e}")),
    };
    let coord = Arc::new(Mutex::new(coord));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let k = {
        let (coord, stop, seed, large) = (coord.clone(), stop.clone(), opts.seed, opts.large);
        thread::spawn(move || injector(coord, fault, crashes, large, seed, stop))
    };
    // The groups run; once they are all done (or the killer is), the faults stop and
    // stragglers have the grace period.
    let done = Arc::new(AtomicU64::new(0));
    let runner = {
        let (addr, spec, done) = (addr.clone(), spec.clone(), done.clone());
        thread::spawn(move || {
            let r = run_groups(&addr, "storm", groups, &spec);
            done.store(1, Ordering::Relaxed);
            r
        })
    };
    while done.load(Ordering::Relaxed) == 0 && !k.is_finished() {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (kills, ready, problems) = k.join().expect("killer");
    spec.give_up.start();
    let runs = runner.join().expect("runner");
    let elapsed = started.elapsed();
    let running = coord.lock().unwrap().running();
    let checked = check(&addr, &runs, &expected);
    let mut details = problems.clone();
    details.extend(checked.stranded.iter().cloned());
    details.extend(checked.violations.iter().cloned());
    if !running {
        details.push("the coordinator is not running at the end".into());
    }
    let violations =
        problems.len() + checked.stranded.len() + checked.violations.len() + usize::from(!running);
    let style_text = match style {
        Style::Tools => format!("block 1 s slices, request_id, lease {lease} s"),
        Style::Polling => "LAVA polling every 10-50 ms, no block, no request_id".to_owned(),
    };
    let fault_text = match fault {
        Fault::Kill => format!(
            "{kills} kill -9 + restarts (every 1-4 s, seed {})",
            opts.seed
        ),
        Fault::Freeze => format!(
            "{kills} SIGSTOP freezes of {} s, longer than the lease (every 1-4 s, seed {})",
            if opts.large { "4-9" } else { "3-6" },
            opts.seed
        ),
    };
    let ready_text = match fault {
        Fault::Kill => "restart to answer",
        Fault::Freeze => "thaw to answer",
    };
    let line = format!(
        "load {groups} groups x {n} nodes, {rounds} rounds, {} calls ({} requests with retries), {style_text}; \
         faults {fault_text}; violations {violations} \
         (stranded {}, replies differing / early syncs / lost sends {}, of which lost sends {}); \
         figures: nodes finished {}/{}, acknowledged sends kept {}/{}, syncs checked {}, \
         calls hit by a fault and asked again {} (syncs {}), \
         send latency median {:.1} ms p99 {:.1} ms max {:.0} ms, {ready_text} median {:.0} ms max {:.0} ms, \
         {:.1} s",
        checked.logical,
        checked.attempts,
        checked.stranded.len(),
        checked.violations.len(),
        checked.acked - checked.kept,
        checked.finished,
        checked.nodes,
        checked.kept,
        checked.acked,
        checked.syncs_checked,
        checked.hit,
        checked.syncs_hit,
        quantile_ms(&checked.send_latency, 0.5),
        quantile_ms(&checked.send_latency, 0.99),
        max_ms(&checked.send_latency),
        quantile_ms(&ready, 0.5),
        max_ms(&ready),
        elapsed.as_secs_f64(),
    );
    Outcome {
        name,
        violations,
        known: 0,
        line,
        details,
    }
}
