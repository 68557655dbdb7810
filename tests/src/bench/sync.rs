//! Latency of the coordination primitives: N nodes (threads of this process) doing
//! `lava_sync` rounds, and the start barrier (`group_data`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lava_protocol::{RequestKind, Response};

use super::net::{self, Errors, Failure, Timeouts};
use super::row::{Row, Section};
use super::servers::Kind;
use super::stats::ms;
use super::Progress;

/// How a node waits.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// As LAVA's dispatcher: on `wait`, sleep this long and ask again.
    Poll(Duration),
    /// Our extension: the request carries `block` (seconds); on `wait`, ask again at once.
    Block(f64),
}

impl Mode {
    pub fn variant(self) -> String {
        match self {
            Mode::Poll(d) => format!("poll{}ms", d.as_millis()),
            Mode::Block(_) => "block".into(),
        }
    }
}

/// Per-request bounds: a reference that drops SYNs or stalls costs an error, not a hang.
/// Generous, because a client that gives up on a connection the reference has not accepted
/// yet kills it later (it crashes writing the reply to a closed connection): its SYN-ACK
/// retransmits (1, 2, 4 s...) keep such connections waiting for seconds.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    io: Duration::from_secs(10),
};

/// Pause after a failed request before the next attempt (LAVA retries too).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Unique group names within this run.
pub fn group_name(tag: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asks `kind` until the answer is not `wait` (or `deadline`). Returns when the answer
/// came; failures are counted in `errors` and retried. `first_answer` runs after the first
/// request was written (block) or answered (poll): the server knows the node from then on.
#[allow(clippy::too_many_arguments)]
fn until_answered(
    addr: SocketAddr,
    group: &str,
    client: &str,
    size: u32,
    kind: RequestKind,
    mode: Mode,
    deadline: Instant,
    errors: &mut Errors,
    first_answer: Option<&dyn Fn()>,
) -> Option<Instant> {
    let plain = net::encode(&net::request(group, client, size, kind.clone(), None));
    let mut announced = first_answer.is_none();
    loop {
        let now = Instant::now();
        if now >= deadline {
            errors.add_named("gave_up", 1);
            return None;
        }
        let result = match mode {
            Mode::Poll(_) => {
                let r = net::exchange(addr, &plain, None, TIMEOUTS, None);
                if !announced {
                    if let Some(f) = first_answer {
                        f();
                    }
                    announced = true;
                }
                r
            }
            Mode::Block(max) => {
                let block = max.min((deadline - now).as_secs_f64()).max(0.001);
                let req = net::request(group, client, size, kind.clone(), Some(block));
                let frame = net::encode(&req);
                let sent = first_answer.filter(|_| !announced);
                announced = true;
                net::exchange(addr, &frame, Some(block), TIMEOUTS, sent)
            }
        };
        match result {
            Ok(Response::Wait) => {
                if let Mode::Poll(pause) = mode {
                    thread::sleep(pause);
                }
            }
            Ok(_) => return Some(Instant::now()),
            Err(failure) => {
                errors.add(failure);
                // A nack will not change: stop this node's attempt.
                if failure == Failure::Nack {
                    errors.add_named("gave_up", 1);
                    return None;
                }
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// What one sync-latency run does.
#[derive(Debug, Clone, Copy)]
pub struct SyncSpec {
    pub nodes: usize,
    pub rounds: usize,
    pub mode: Mode,
    /// A node gives its round up after this long.
    pub round_timeout: Duration,
    /// No new round starts after this much time.
    pub budget: Duration,
}

/// N threads start each round together; each measures from its first `lava_sync` of the
/// round to its `ack`. Median and p99 over nodes and rounds.
pub fn sync_latency(
    addr: SocketAddr,
    server: Kind,
    section: Section,
    idle_groups: u64,
    spec: SyncSpec,
    progress: &Progress,
) -> Row {
    let n = spec.nodes;
    let group = group_name("sync");
    let start = Arc::new(Barrier::new(n + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let round = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let all_errors = Arc::new(Mutex::new(Errors::default()));
    let began = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (start, stop, round) = (start.clone(), stop.clone(), round.clone());
            let (samples, all_errors, group) = (samples.clone(), all_errors.clone(), group.clone());
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let client = format!("node{i}");
                    let mut mine = Vec::new();
                    let mut errors = Errors::default();
                    loop {
                        start.wait();
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = round.load(Ordering::SeqCst);
                        let t0 = Instant::now();
                        let kind = net::sync_kind(&format!("round{r}"));
                        if let Some(done) = until_answered(
                            addr,
                            &group,
                            &client,
                            n as u32,
                            kind,
                            spec.mode,
                            t0 + spec.round_timeout,
                            &mut errors,
                            None,
                        ) {
                            mine.push(ms(done - t0));
                        }
                        start.wait();
                    }
                    samples.lock().unwrap().extend(mine);
                    all_errors.lock().unwrap().merge(&errors);
                })
                .expect("spawn a node thread")
        })
        .collect();
    let mut done = 0;
    for r in 0..spec.rounds {
        if began.elapsed() > spec.budget {
            break;
        }
        round.store(r, Ordering::SeqCst);
        start.wait();
        start.wait();
        done += 1;
        progress.tick(&format!("round {}/{}", r + 1, spec.rounds));
    }
    stop.store(true, Ordering::SeqCst);
    start.wait();
    for t in threads {
        let _ = t.join();
    }
    let samples = samples.lock().unwrap().clone();
    let errors = all_errors.lock().unwrap().clone();
    let mut row = Row::new(section, &spec.mode.variant(), n as u64, server)
        .latencies(&samples)
        .errors(&errors)
        .seconds(began.elapsed().as_secs_f64());
    if section == Section::Wakeup {
        row = row.note(format!(
            "4-node group syncing while {idle_groups} groups are idle"
        ));
    }
    if done < spec.rounds {
        row = row.note(format!(
            "{done} of {} rounds (time budget {:?})",
            spec.rounds, spec.budget
        ));
    } else {
        row = row.note(format!("{done} rounds"));
    }
    row
}

/// The start barrier: N-1 nodes wait in `group_data`; the last node's `group_data` starts the
/// clock, which stops when every node (the last included) has its reply. One sample per
/// repetition (a fresh group each): the time until the last node is released.
pub fn start_barrier(
    addr: SocketAddr,
    server: Kind,
    nodes: usize,
    mode: Mode,
    reps: usize,
    timeout: Duration,
    progress: &Progress,
) -> Row {
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    for rep in 0..reps {
        progress.tick(&format!("repetition {}/{reps}", rep + 1));
        let group = group_name("barrier");
        let ready = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + timeout;
        let threads: Vec<_> = (0..nodes - 1)
            .map(|i| {
                let (ready, group) = (ready.clone(), group.clone());
                thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || {
                        let mut errors = Errors::default();
                        let announce = || {
                            ready.fetch_add(1, Ordering::SeqCst);
                        };
                        let released = until_answered(
                            addr,
                            &group,
                            &format!("node{i}"),
                            nodes as u32,
                            RequestKind::GroupData,
                            mode,
                            deadline,
                            &mut errors,
                            Some(&announce),
                        );
                        (released, errors)
                    })
                    .expect("spawn a node thread")
            })
            .collect();
        // Every other node is registered (poll: it had an answer; block: its request is
        // written, and a moment later parked).
        while ready.load(Ordering::SeqCst) < nodes - 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        // 50 ms for the last registrations to land, plus an offset that moves through the
        // polling period from one repetition to the next: polling nodes move in step, so
        // without it every sample would fall on the same phase of their 10 ms cycle.
        let phase = (rep * 37 % 100) as u64 * 100;
        thread::sleep(Duration::from_millis(50) + Duration::from_micros(phase));
        let t0 = Instant::now();
        let last = until_answered(
            addr,
            &group,
            &format!("node{}", nodes - 1),
            nodes as u32,
            RequestKind::GroupData,
            mode,
            deadline,
            &mut errors,
            None,
        );
        let mut all = vec![last];
        for t in threads {
            let (released, e) = t.join().expect("node thread");
            errors.merge(&e);
            all.push(released);
        }
        if all.iter().all(Option::is_some) {
            let latest = all.into_iter().flatten().max().expect("nodes");
            samples.push(ms(latest.saturating_duration_since(t0)));
        }
    }
    Row::new(Section::Barrier, &mode.variant(), nodes as u64, server)
        .latencies(&samples)
        .errors(&errors)
        .seconds(began.elapsed().as_secs_f64())
        .note(format!("{} of {reps} repetitions complete", samples.len()))
}
