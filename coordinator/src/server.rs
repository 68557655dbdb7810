//! The network server around the state machine: one task per connection, a semaphore
//! bounding connections, a std `Mutex` around the state that is never held across `.await`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lava_protocol::frame::{self, FrameDecoder, FrameError};
use lava_protocol::{Reply, Request, RequestError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::access::Access;
use crate::config::Settings;
use crate::history::{self, History, Seen};
use crate::metrics::{Failure, Gauges, Metrics};
use crate::state::{Coordinator, Event, Group, WaiterId, Wakeup};
use crate::writer::Writer;

mod warnings;
use warnings::Warnings;

/// How long a reply write may take before the client is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply, and the store ticket that must be committed before it leaves.
type Ticketed = (Reply, u64);

/// A held request's reply, and when the change that released it happened.
type Released = (Ticketed, Instant);

struct Inner {
    machine: Coordinator,
    /// Where each parked request's reply goes.
    waiters: HashMap<WaiterId, oneshot::Sender<Released>>,
    next_waiter: WaiterId,
    /// The last batch of changes handed to the store.
    ticket: u64,
    /// Which batch last wrote each group, and each (group, message id)'s data, until it is
    /// known to be committed: a reply that changed nothing waits for what it shows only, so
    /// that reads of stored data go on while the disk refuses new writes.
    group_tickets: HashMap<String, u64>,
    message_tickets: HashMap<(String, String), u64>,
    /// The state machine's time: the time the coordinator was running.
    clock: Clock,
    /// What happened in each group, for the web view and `status --group`.
    history: History,
    /// When the histories' rows last went to the store.
    history_stored: Instant,
    /// The history of each parked request, closed when it is woken (under this lock).
    held_history: HashMap<WaiterId, history::Asked>,
}

/// How often the histories' changed rows go to the store (with a batch of the state's).
const HISTORY_EVERY: Duration = Duration::from_secs(1);

/// The server ticks every second; a longer gap between two looks at the clock than this
/// means the process did not run (SIGSTOP, a suspended VM, a machine starved for minutes).
const FROZEN_AFTER: Duration = Duration::from_secs(2);

/// Time that excludes the gaps in which the coordinator did not run, so that they never count
/// against leases (a member is not failed for the coordinator's own absence), held requests'
/// ages or group expiry. It is what the state machine gets as `now`.
struct Clock {
    /// The real time of the last look.
    last: Instant,
    /// The gaps so far, in all.
    frozen: Duration,
}

impl Clock {
    fn new() -> Self {
        Clock {
            last: Instant::now(),
            frozen: Duration::ZERO,
        }
    }

    /// The coordinator's time now. A gap since the last look longer than `FROZEN_AFTER` is
    /// taken out whole: when in it the process stopped is unknown, and counting up to a
    /// second too little against a lease is harmless, counting the freeze is not.
    fn now(&mut self) -> Instant {
        let real = Instant::now();
        let gap = real.saturating_duration_since(self.last);
        if gap > FROZEN_AFTER {
            self.frozen += gap;
            warn!(
                "the coordinator did not run for about {:.1}s (stopped, suspended or starved): \
                 that time does not count against leases, waits or group expiry",
                gap.as_secs_f64()
            );
        }
        self.last = real;
        real.checked_sub(self.frozen).unwrap_or(real)
    }
}

impl Inner {
    /// Hands what changed to the store; returns whether anything did (the batch then has
    /// the ticket `self.ticket`, which covers every change so far).
    fn flush(&mut self, writer: Option<&Writer>) -> bool {
        let Some(writer) = writer else {
            return false;
        };
        let batch = self.machine.take_mutations();
        if batch.is_empty() {
            return false;
        }
        self.ticket += 1;
        for m in &batch {
            let group = m.group();
            match self.group_tickets.get_mut(group) {
                Some(t) => *t = self.ticket,
                None => {
                    self.group_tickets.insert(group.to_owned(), self.ticket);
                }
            }
            if let crate::state::Mutation::PutMessage { id, .. } = m {
                self.message_tickets
                    .insert((group.to_owned(), id.clone()), self.ticket);
            }
        }
        // The histories' rows ride along with a state's batch at most once a `HISTORY_EVERY`
        // (never a commit of their own, never a reply's wait): each row is written once per
        // period however often it changed, and a restart finds them as recent as that.
        let mut batch = batch;
        if self.history_stored.elapsed() >= HISTORY_EVERY {
            batch.extend(self.history.take_mutations());
            self.history_stored = Instant::now();
        }
        writer.submit(self.ticket, batch);
        true
    }

    /// The ticket `request`'s reply must wait for when it changed nothing: that of what the
    /// reply may show (a `lava_wait`: the id's data; anything else: its group). The rules
    /// answer a request from its own group's state only.
    fn shown_by(&self, request: &Request) -> u64 {
        let group = &request.group_name;
        match &request.kind {
            lava_protocol::RequestKind::Wait { id } => self
                .message_tickets
                .get(&(group.clone(), id.clone()))
                .copied()
                .unwrap_or(0),
            _ => self.group_tickets.get(group).copied().unwrap_or(0),
        }
    }

    /// Forgets the tickets that are committed.
    fn committed(&mut self, committed: u64) {
        self.group_tickets.retain(|_, t| *t > committed);
        self.message_tickets.retain(|_, t| *t > committed);
    }

    fn deliver(&mut self, wakeups: Vec<Wakeup>, ticket: u64) {
        let now = Instant::now();
        let at = history::now_ms();
        for Wakeup { waiter, reply } in wakeups {
            if let Some(asked) = self.held_history.remove(&waiter) {
                self.history.answered(asked, &reply, at);
            }
            if let Some(tx) = self.waiters.remove(&waiter) {
                // The receiver may have timed out at this very moment; it then finds the
                // reply with `try_recv` after `cancel` returned false.
                let _ = tx.send(((reply, ticket), now));
            }
        }
        for event in self.machine.take_events() {
            self.history.event(&event, at);
            match event {
                Event::Created { group, size } => info!("group {group:?} created for {size} nodes"),
                Event::Complete { group } => info!("group {group:?} is complete"),
                Event::Cleared { group } => {
                    info!("group {group:?} cleared by all its members, deleted")
                }
                Event::Deadlock { group, verdict } => warn!("group {group:?}: {verdict}"),
                Event::Operator {
                    group,
                    operator,
                    what,
                } => warn!("group {group:?}: the operator {operator:?} {what}"),
                Event::LeaseExpired { group, client } => {
                    warn!("group {group:?}: {client:?} stopped asking while it waited (lease expired): counted as failed")
                }
                Event::Expired { group, idle } => {
                    info!(
                        "group {group:?} expired after {}s without a request",
                        idle.as_secs()
                    )
                }
            }
        }
    }
}

/// The state shared by all connections.
pub struct Shared {
    inner: Mutex<Inner>,
    settings: Settings,
    access: Access,
    pub metrics: Metrics,
    started: Instant,
    /// `None`: state in memory only.
    writer: Option<Writer>,
    /// Parked requests beyond this are answered `wait` at once, so that held connections can
    /// never use up every connection slot.
    max_parked: usize,
    /// Bytes of request bodies being received (beyond each connection's first block): one
    /// permit per byte, `max_inflight_bytes` in all.
    inflight: Semaphore,
    /// Connections open per client address (a std `Mutex`, held for a map update only).
    addresses: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    /// Repeated warnings, rate-limited by kind.
    warnings: Warnings,
}

impl Shared {
    /// The server's state: `groups` restored from the store, changes written by `writer`.
    pub fn new(settings: Settings, groups: Vec<Group>, writer: Option<Writer>) -> Arc<Self> {
        let max_parked = (settings.max_connections * 3 / 4).max(1);
        let max_per_address = settings.max_connections_per_address();
        let inflight = Semaphore::new(settings.max_inflight_bytes.min(Semaphore::MAX_PERMITS));
        let mut history = History::new(settings.history_group_bytes, settings.history_total_bytes);
        if writer.is_some() {
            history = history.persisted();
        }
        let mut machine = Coordinator::new(settings.group_expiry())
            .with_limits(settings.limits())
            .with_block_max(settings.block_max())
            .with_hold_lava_requests(settings.hold_lava_requests())
            .with_verdicts(settings.verdicts())
            .with_lab_locks(settings.lab_locks);
        for group in groups {
            machine.restore(group);
        }
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine,
                waiters: HashMap::new(),
                next_waiter: 0,
                ticket: 0,
                group_tickets: HashMap::new(),
                message_tickets: HashMap::new(),
                clock: Clock::new(),
                history,
                history_stored: Instant::now(),
                held_history: HashMap::new(),
            }),
            access: settings.access(),
            settings,
            writer,
            max_parked,
            inflight,
            addresses: Mutex::new(HashMap::new()),
            max_per_address,
            warnings: Warnings::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
        })
    }

    /// Logs a warning of `kind` unless that kind is flooding the log (at most
    /// `warnings::PER_WINDOW` lines per kind per `warnings::WINDOW`; what is left out is
    /// reported as a count).
    fn warn(&self, kind: &'static str, line: impl FnOnce() -> String) {
        if self.warnings.allow(kind, Instant::now(), report_suppressed) {
            warn!("{}", line());
        }
    }

    /// `warn`, for the INFO lines of requests answered `nack` (kind `nack`).
    fn info_nack(&self, line: impl FnOnce() -> String) {
        if self
            .warnings
            .allow("nack", Instant::now(), report_suppressed)
        {
            info!("{}", line());
        }
    }

    /// Counts a connection from `ip`; `None` when that address holds its
    /// `max_connections_per_address` already.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let count = addresses.entry(ip).or_insert(0);
        if *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            shared: self.clone(),
            ip,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the state is still consistent enough to
        // keep serving the other groups.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request, holding it while its answer is `wait` and it may block; the
    /// reply is returned once what it depends on is stored.
    pub async fn call(&self, request: &Request, shutdown: &CancellationToken) -> Reply {
        let (reply, ticket) = self.answer(request, shutdown).await;
        // A `wait` needs nothing stored: the client asks again, and its asking again redoes
        // whatever this request changed.
        if let (Some(writer), false) = (&self.writer, reply.is_wait()) {
            if let Err(failed) = writer.committed(ticket).await {
                // The change stays in memory and is stored once the disk lets it; the client
                // asks again and gets the answer it missed (a sync round it completed is
                // not opened anew).
                self.lock().machine.reply_lost(request);
                self.warn("store", || {
                    format!(
                        "nack {} from {} in {}: {failed}",
                        request.kind.name(),
                        quote(&request.client_name, 200),
                        quote(&request.group_name, 200)
                    )
                });
                return Reply::nack(failed.to_string());
            }
        }
        reply
    }

    async fn answer(&self, request: &Request, shutdown: &CancellationToken) -> Ticketed {
        let (waiter, mut rx, hold) = {
            let mut inner = self.lock();
            let hold = inner.machine.hold_for(request);
            let park =
                (!hold.is_zero() && inner.machine.parked_count() < self.max_parked).then(|| {
                    inner.next_waiter += 1;
                    inner.next_waiter
                });
            let now = inner.clock.now();
            let member = |machine: &crate::state::Coordinator| {
                machine
                    .group(&request.group_name)
                    .map(|g| (g.size, g.members.contains_key(&request.client_name)))
            };
            let before = member(&inner.machine);
            let out = inner.machine.handle(request, now, park);
            let after = member(&inner.machine);
            let seen = Seen {
                known: before.is_some(),
                exists: after.is_some(),
                registered: before.is_none_or(|(_, m)| !m) && after.is_some_and(|(_, m)| m),
                created: after.filter(|_| before.is_none()).map(|(size, _)| size),
            };
            let asked = inner
                .history
                .asked(request, history::now_ms(), out.reply.as_ref(), seen);
            let ticket = match inner.flush(self.writer.as_ref()) {
                true => inner.ticket,
                false => inner.shown_by(request),
            };
            // What woke them changed something: they wait for everything so far.
            let changes = inner.ticket;
            inner.deliver(out.wakeups, changes);
            match (out.reply, park) {
                (Some(reply), _) => return (reply, ticket),
                (None, None) => return (Reply::wait(), ticket),
                (None, Some(waiter)) => {
                    let (tx, rx) = oneshot::channel();
                    inner.waiters.insert(waiter, tx);
                    if let Some(asked) = asked {
                        inner.held_history.insert(waiter, asked);
                    }
                    (waiter, rx, hold)
                }
            }
        };
        tokio::select! {
            reply = &mut rx => {
                if let Ok((reply, released)) = reply {
                    self.metrics.wakeup(released.elapsed());
                    return reply;
                }
            }
            _ = tokio::time::sleep(hold) => {}
            _ = shutdown.cancelled() => {}
        }
        let mut inner = self.lock();
        if inner.machine.cancel(waiter) {
            inner.waiters.remove(&waiter);
            // Its history stays open: the client asks again.
            inner.held_history.remove(&waiter);
            (Reply::wait(), inner.ticket)
        } else {
            match rx.try_recv() {
                Ok((reply, released)) => {
                    self.metrics.wakeup(released.elapsed());
                    reply
                }
                Err(_) => (Reply::wait(), inner.ticket),
            }
        }
    }

    /// The `status` reply: groups (or one group), clients, held requests, counters.
    fn status(&self, group: Option<&str>) -> serde_json::Value {
        let m = &self.metrics;
        let mut inner = self.lock();
        let now = inner.clock.now();
        serde_json::json!({
            "response": "status",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": self.started.elapsed().as_secs(),
            "durable": self.writer.is_some(),
            "counters": {
                "requests": m.requests_total(),
                "nacks": m.nacks_total(),
                "bad_input": m.failures_of(Failure::BadFrame)
                    + m.failures_of(Failure::BadRequest)
                    + m.failures_of(Failure::ReadTimeout),
                "refused": m.failures_of(Failure::Refused),
                "over_limit": m.failures_of(Failure::OverLimit),
                "connections": m.connections.load(Ordering::Relaxed),
                "held": inner.machine.parked_count(),
                "groups": inner.machine.groups().count(),
                "stored_bytes": inner.machine.total_bytes(),
            },
            "groups": inner.machine.status(group, now),
            "lab_locks": inner.machine.lab_locks_status(),
            "history": group.and_then(|g| inner.history.log(g)),
        })
    }

    /// Reads the state machine and the histories under the lock, with the state machine's
    /// time (for ages) and the wall clock in ms (for the histories).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&crate::state::Coordinator, &History, Instant, u64) -> R,
    ) -> R {
        let mut inner = self.lock();
        let now = inner.clock.now();
        f(&inner.machine, &inner.history, now, history::now_ms())
    }

    /// Puts back the histories read from the store.
    pub fn restore_history(&self, rows: Vec<(String, u64, String)>) {
        self.lock().history.restore(rows);
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The Prometheus metrics.
    pub fn metrics_text(&self) -> String {
        let gauges = {
            let mut inner = self.lock();
            let now = inner.clock.now();
            Gauges {
                groups: inner.machine.groups().count(),
                clients: inner.machine.groups().map(|g| g.members.len()).sum(),
                blocked: inner.machine.parked_count(),
                stored_bytes: inner.machine.total_bytes(),
                blocked_ages: inner.machine.blocked_ages(now),
            }
        };
        self.metrics.render(&gauges)
    }

    /// Once a second: members whose lease expired count as failed; requests held longer
    /// than `blocked_log_after` are logged, once each; a store that lost its file gets the
    /// whole state to write again.
    pub fn every_second(&self) {
        let now = Instant::now();
        for (kind, count) in self.warnings.ended(now) {
            report_suppressed(kind, count);
        }
        let lines = {
            let mut inner = self.lock();
            // The look that notices a gap comes before the leases are checked.
            let now = inner.clock.now();
            let wakeups = inner.machine.expire_leases(now);
            inner.flush(self.writer.as_ref());
            let ticket = inner.ticket;
            inner.deliver(wakeups, ticket);
            if let Some(writer) = &self.writer {
                // Changes nobody waits for (those of `wait` replies) are stored within a second.
                writer.nudge();
                inner.committed(writer.progress().committed);
                if writer.wants_snapshot() {
                    inner.ticket += 1;
                    let mut state = inner.machine.snapshot();
                    state.extend(inner.history.snapshot());
                    writer.submit_snapshot(inner.ticket, state);
                }
            }
            inner
                .machine
                .long_waits(now, self.settings.blocked_log_after())
        };
        for line in lines {
            info!("{line}");
        }
    }

    /// Forgets idle groups.
    pub fn expire(&self) {
        let mut inner = self.lock();
        let now = inner.clock.now();
        let wakeups = inner.machine.expire(now);
        inner.flush(self.writer.as_ref());
        let ticket = inner.ticket;
        inner.deliver(wakeups, ticket);
    }
}

/// The line that stands for the warnings a flood made `Shared::warn` leave out.
fn report_suppressed(kind: &str, count: u64) {
    warn!(
        "suppressed {count} similar warnings ({kind}) in the last {}s",
        warnings::WINDOW.as_secs()
    );
}

/// One connection counted against its address; dropping it gives the place back.
struct AddressSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut addresses = self
            .shared
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = addresses.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                addresses.remove(&self.ip);
            }
        }
    }
}

/// Turns away a connection over `max_connections_per_address` at once, without a task or a
/// connection slot: what it sent already is read (so that closing sends a FIN, not a reset
/// that could discard the reply) and a `nack` naming the limit is written if the socket
/// takes it without waiting.
fn refuse_over_address_limit(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    shared.metrics.failure(Failure::OverLimit);
    let limit = shared.max_per_address;
    shared.warn("over_limit", || {
        format!(
            "{peer}: refused a connection: {} holds max_connections_per_address ({limit}) already",
            peer.ip()
        )
    });
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let why = format!(
        "too many connections from {}: max_connections_per_address is {limit}; try again",
        peer.ip()
    );
    let _ = stream.try_write(&frame::encode(&Reply::nack(why).to_json()));
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The setting is named, so that an operator knows what to raise.
    #[error("frame body of {len} bytes is over the limit of {max} (max_request_bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("no complete request within {0:?}")]
    Timeout(Duration),
    #[error(
        "no complete request within {0:?}: the coordinator is receiving \
         max_inflight_bytes ({1} bytes) of other requests; try again"
    )]
    Inflight(Duration, usize),
}

/// Every connection reads its first block without asking the in-flight budget: small
/// requests (all of LAVA's) never wait for it, and `max_connections` bounds these.
const FIRST_BLOCK: usize = 4096;
/// A body beyond the first block grows by at most this much per step, each step paid for
/// from the in-flight budget before it is allocated.
const GROW_STEP: usize = 64 << 10;

/// Reads one request frame. `Ok(None)`: the peer closed without sending anything.
/// Reads in blocks, so that a whole small request usually takes one `recv`.
///
/// The buffer grows with the bytes that arrive, never on the header's word, and every byte
/// beyond the first block is taken from `budget` (returned with the body; dropping it gives
/// the bytes back). Without room in the budget the read waits, not reading the socket (TCP
/// holds the sender back); `starved` says so meanwhile, for the caller's timeout.
async fn read_body<'a>(
    stream: &mut TcpStream,
    max: usize,
    budget: &'a Semaphore,
    starved: &mut bool,
) -> Result<Option<(String, Option<SemaphorePermit<'a>>)>, FrameError> {
    let mut decoder = FrameDecoder::with_capacity(max, FIRST_BLOCK);
    let mut paid: Option<SemaphorePermit<'a>> = None;
    loop {
        let buf = decoder.buffer();
        if buf.capacity() == buf.len() {
            // Grow as data arrives: a header alone must not reserve a whole large body.
            let step = decoder.missing().clamp(1, GROW_STEP);
            let permit = match budget.try_acquire_many(step as u32) {
                Ok(permit) => permit,
                Err(_) => {
                    *starved = true;
                    let permit = budget
                        .acquire_many(step as u32)
                        .await
                        .expect("the in-flight budget is never closed");
                    *starved = false;
                    permit
                }
            };
            match &mut paid {
                Some(paid) => paid.merge(permit),
                None => paid = Some(permit),
            }
            decoder.buffer().reserve_exact(step);
        }
        // Only what arrived with the request is looked at: a client may keep its write side
        // open while it waits for the reply.
        if stream.read_buf(decoder.buffer()).await? == 0 {
            decoder.closed()?;
            return Ok(None);
        }
        if let Some(body) = decoder.decode()? {
            return Ok(Some((body, paid)));
        }
    }
}

/// Writes a reply; returns whether it was delivered (to the client's socket buffer).
async fn write_reply(stream: &mut TcpStream, reply: &Reply) -> bool {
    write_frame(stream, &reply.to_json()).await
}

async fn write_frame(stream: &mut TcpStream, body: &str) -> bool {
    // Header and body in one write: LAVA's readers count blocks, not bytes.
    let bytes = frame::encode(body);
    // Closing the socket (on drop) sends the FIN: no separate shutdown call.
    let write = stream.write_all(&bytes);
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!("reply not delivered: {e}");
            false
        }
        Err(_) => {
            debug!("reply not delivered within {WRITE_TIMEOUT:?}");
            false
        }
    }
}

/// Serves one connection: one request, one reply.
async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let settings = &shared.settings;
    let mut starved = false;
    let read = tokio::time::timeout(
        settings.read_timeout(),
        read_body(
            &mut stream,
            settings.max_request_bytes,
            &shared.inflight,
            &mut starved,
        ),
    )
    .await;
    let read = read.map_err(|_| match starved {
        true => ReadError::Inflight(settings.read_timeout(), settings.max_inflight_bytes),
        false => ReadError::Timeout(settings.read_timeout()),
    });
    let (body, paid) = match read {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => return debug!("{peer}: closed without a request"),
        Ok(Err(FrameError::Io(e))) => return debug!("{peer}: {e}"),
        Ok(Err(e)) => {
            shared.metrics.failure(Failure::BadFrame);
            let e = match e {
                FrameError::TooLarge { len, max } => ReadError::TooLarge { len, max },
                e => ReadError::from(e),
            };
            shared.warn("bad_frame", || format!("{peer}: bad request frame: {e}"));
            write_reply(&mut stream, &Reply::nack(format!("bad request frame: {e}"))).await;
            return;
        }
        Err(e) => {
            shared.metrics.failure(match e {
                ReadError::Inflight(..) => Failure::OverLimit,
                _ => Failure::ReadTimeout,
            });
            shared.warn("read_timeout", || format!("{peer}: {e}"));
            write_reply(&mut stream, &Reply::nack(e.to_string())).await;
            return;
        }
    };
    let parsed = serde_json::from_str::<serde_json::Value>(&body)
        .map_err(|e| RequestError::NotJson(e.to_string()));
    if let Ok(value) = &parsed {
        if value.get("request").and_then(|r| r.as_str()) == Some("status") {
            return serve_status(&shared, &mut stream, peer, value).await;
        }
    }
    let request = match parsed.and_then(|v| Request::from_value(&v)) {
        Ok(request) => request,
        Err(e) => {
            shared.metrics.failure(Failure::BadRequest);
            shared.warn("bad_request", || {
                format!("{peer}: bad request: {e}: {}", quote(&body, 200))
            });
            drop((body, paid));
            write_reply(&mut stream, &Reply::nack(format!("bad request: {e}"))).await;
            return;
        }
    };
    // The frame is parsed: its bytes go back to the in-flight budget. What the request
    // makes the coordinator keep counts against the store's limits instead.
    drop((body, paid));
    let refused = match request.kind {
        lava_protocol::RequestKind::Operator { .. } => shared
            .access
            .refuses_operator(peer.ip(), request.secret.as_deref()),
        _ => shared.access.refuses(peer.ip(), request.secret.as_deref()),
    };
    if let Some(why) = refused {
        shared.metrics.failure(Failure::Refused);
        shared.warn("refused", || {
            format!(
                "{peer}: refused {} from {} in {}: {why}",
                request.kind.name(),
                quote(&request.client_name, 200),
                quote(&request.group_name, 200)
            )
        });
        write_reply(&mut stream, &Reply::nack(why)).await;
        return;
    }
    let started = Instant::now();
    let reply = shared.call(&request, &shutdown).await;
    shared.metrics.request(&request.kind, reply.response);
    debug!(
        "{peer}: {} {} from {} in {} -> {:?} after {:?}",
        request.kind.name(),
        quote(request_id(&request), 200),
        quote(&request.client_name, 200),
        quote(&request.group_name, 200),
        reply.response,
        started.elapsed()
    );
    if let Some(error) = &reply.error {
        shared.info_nack(|| {
            format!(
                "{peer}: nack {} from {} in {}: {}",
                request.kind.name(),
                quote(&request.client_name, 200),
                quote(&request.group_name, 200),
                quote(error, 400)
            )
        });
    }
    if !write_reply(&mut stream, &reply).await && !reply.is_wait() {
        // The client never got it (reset, timed out): a LAVA client's retry of a sync must
        // see this answer rather than open the next round (docs/PROTOCOL.md, durability).
        shared.lock().machine.reply_lost(&request);
    }
}

/// Answers `{"request": "status"[, "group": NAME][, "secret": ...]}`.
async fn serve_status(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
    value: &serde_json::Value,
) {
    let secret = value.get("secret").and_then(|s| s.as_str());
    if let Some(why) = shared.access.refuses(peer.ip(), secret) {
        shared.metrics.failure(Failure::Refused);
        shared.warn("refused", || format!("{peer}: refused status: {why}"));
        write_reply(stream, &Reply::nack(why)).await;
        return;
    }
    let group = value.get("group").and_then(|g| g.as_str());
    let body = lava_protocol::json::to_ascii_string(&shared.status(group));
    write_frame(stream, &body).await;
}

/// Client text for a log line: Rust-escaped (`"..."`), at most `max` characters of it, then
/// how long it was.
fn quote(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}...({} bytes)", &text[..end], text.len()),
    }
}

fn request_id(request: &Request) -> &str {
    use lava_protocol::RequestKind::*;
    match &request.kind {
        Send { id, .. } | Wait { id } | WaitAll { id, .. } | Sync { id, .. } => id,
        SendTo { id, .. } | Enqueue { id, .. } | Consume { id } | Barrier { id, .. } => id,
        Lock { name, .. } | Unlock { name, .. } => name,
        WaitAny { ids, .. } => ids.first().map_or("", String::as_str),
        _ => "",
    }
}

/// Connections waiting to be accepted; the kernel caps it at `net.core.somaxconn`. Bursts
/// of hundreds of nodes must not overflow it (std's and mio's 128 do: dropped SYNs cost a
/// second each).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    defer_accept(&socket);
    socket.listen(LISTEN_BACKLOG)
}

/// Asks the kernel to hand over a connection only once its first data arrived: the request
/// is then read at once instead of after another trip through epoll, and clients that connect
/// and send nothing cost no task. Best effort: without it everything works, only slower.
fn defer_accept(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = 5;
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!(
            "TCP_DEFER_ACCEPT not available: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Accepts and serves connections until `shutdown` is cancelled, then lets the connections
/// in progress finish (held requests are answered `wait`) and stores what is left. Returns
/// whether everything was stored.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) -> bool {
    let limit = shared.settings.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    let expiry = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let every = (shared.settings.group_expiry() / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // Long waits are reported within a second of passing the threshold.
            let mut second = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => shared.expire(),
                    _ = second.tick() => shared.every_second(),
                    _ = shutdown.cancelled() => break,
                }
            }
        })
    };
    accept(
        &listener,
        &shared,
        &slots,
        &shutdown,
        refuse_over_address_limit,
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            move |stream, peer| {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                async move {
                    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
                    serve(shared.clone(), stream, peer, shutdown).await;
                    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        },
    )
    .await;
    info!("shutting down: no new connections");
    let _ = expiry.await;
    // Wait (bounded) for the connections in progress to finish.
    let drain = slots.acquire_many(limit as u32);
    if tokio::time::timeout(Duration::from_secs(5) + WRITE_TIMEOUT, drain)
        .await
        .is_err()
    {
        warn!("some connections did not finish in time");
    }
    // What `wait` replies left unstored, so that a restart starts from the latest state. A
    // disk that still fails gets a bounded last try: SIGTERM is obeyed either way.
    if let Some(writer) = &shared.writer {
        // The histories' last rows, which no change of the state carried.
        let mut inner = shared.lock();
        let rows = inner.history.take_mutations();
        if !rows.is_empty() {
            inner.ticket += 1;
            writer.submit(inner.ticket, rows);
        }
    }
    match &shared.writer {
        Some(writer) => match tokio::task::block_in_place(|| writer.close(CLOSE_WITHIN)) {
            Ok(()) => true,
            Err(e) => {
                error!("stopping with changes not stored: {e}");
                false
            }
        },
        None => true,
    }
}

/// An HTTP client (metrics, web view) over its address's limit: told so (`503`), and closed.
pub(crate) fn refuse_http(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    shared.metrics.failure(Failure::OverLimit);
    debug!("HTTP: {peer} is over max_connections_per_address");
    // Read what of the request is there, so that closing does not reset the answer away.
    let _ = stream.try_read(&mut [0u8; 4096]);
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// The accept loop of every listener of the coordinator (its protocol port, the metrics):
/// at most `slots` connections at once, and `max_connections_per_address` from one address
/// across all listeners (a connection over it goes to `refuse` and is closed), each served by
/// `serve` on a task of its own; returns once `shutdown` is cancelled.
pub(crate) async fn accept<F, Fut>(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    refuse: fn(&Shared, TcpStream, SocketAddr),
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // A slot taken for a connection that is then refused serves the next one.
    let mut slot = None;
    loop {
        let permit = match slot.take() {
            Some(permit) => permit,
            None => tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            },
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    shared.warn("accept", || format!("accept failed: {e}"));
                    slot = Some(permit);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(address) = shared.enter(peer.ip()) else {
            refuse(shared, stream, peer);
            slot = Some(permit);
            continue;
        };
        let served = serve(stream, peer);
        tokio::spawn(async move {
            served.await;
            drop(address);
            drop(permit);
        });
    }
}

/// How long the last commit at shutdown may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
