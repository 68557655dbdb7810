//! Commits the state machine's changes to the store, off the async runtime's way.
//!
//! Connections queue their changes with a ticket and wait (async) until everything up to it
//! is committed. The store's own thread commits what concurrent requests queued, as one
//! transaction (group commit), and every retry after a failure; a lone request on a healthy
//! store (nothing else queued, no fsync per commit) commits its own change where it is, a WAL
//! append to the page cache, which saves the two thread hand-offs a sequential client would
//! otherwise pay on each request. A failing disk never stalls the runtime: the thread keeps
//! the changes and retries on its own, and a waiter that sees the store failing for longer
//! than [`GRACE`] gets the cause, which the server answers as `nack`. Before each commit the
//! state file on disk is checked to be the one opened: one deleted or replaced would take every
//! later change with it, so the server is asked for a snapshot of the whole state, which is
//! written to a new file at the same path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info};

use crate::state::Mutation;
use crate::store::{Store, Sync};

/// How long a reply waits for a failing store to recover before it is answered `nack`.
pub const GRACE: Duration = Duration::from_secs(1);
/// Retries of a failing commit start this often and slow down to `MAX_RETRY`.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// A store that keeps failing is reported again this often (with what is waiting).
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Why a change could not be stored, in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the coordinator cannot store its state: {0}; this change is not stored yet, ask again")]
pub struct StoreFailed(pub Arc<str>);

/// What is stored: everything up to `committed` is on disk; `failing` says why the last
/// commit failed, until one succeeds.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub committed: u64,
    pub failing: Option<Arc<str>>,
}

pub struct Writer {
    shared: Arc<Shared>,
    /// Commits inline are for `state_sync` normal only: an fsync belongs on the thread.
    inline: bool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Locks are taken in this order: `committer`, then `queue`.
struct Shared {
    committer: Mutex<Committer>,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    /// Set when the state file is no longer the one opened.
    wants_snapshot: AtomicBool,
    /// Set by the thread when it ends.
    done: (Mutex<bool>, Condvar),
}

#[derive(Default)]
struct Queue {
    changes: Vec<Mutation>,
    /// The ticket the queued changes reach.
    ticket: u64,
    /// How many submits the queued changes come from (1: a lone request's).
    batches: usize,
    /// The whole state, replacing every change queued before it.
    snapshot: Option<Vec<Mutation>>,
    /// The thread is asked to commit what is queued.
    nudged: bool,
    /// Changes failed to commit: the thread retries after `retry_in`.
    retrying: bool,
    retry_in: Duration,
    stop: bool,
}

impl Writer {
    /// Starts the thread that commits to `store`.
    pub fn start(store: Store) -> std::io::Result<Writer> {
        let (progress, _) = watch::channel(Progress::default());
        let inline = store.sync() == Sync::Normal;
        let shared = Arc::new(Shared {
            committer: Mutex::new(Committer::new(store)),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            progress,
            wants_snapshot: AtomicBool::new(false),
            done: (Mutex::new(false), Condvar::new()),
        });
        let thread = std::thread::Builder::new().name("store".into()).spawn({
            let shared = shared.clone();
            move || {
                run(&shared);
                *lock(&shared.done.0) = true;
                shared.done.1.notify_all();
            }
        })?;
        Ok(Writer {
            shared,
            inline,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues changes; tickets must increase. They are committed once someone waits for
    /// them (`committed`) or the thread is nudged.
    pub fn submit(&self, ticket: u64, batch: Vec<Mutation>) {
        let mut queue = lock(&self.shared.queue);
        queue.changes.extend(batch);
        queue.ticket = ticket;
        queue.batches += 1;
    }

    /// Asks the thread to commit whatever is queued (changes nobody waits for, e.g. those of
    /// `wait` replies, are otherwise committed with the next batch).
    pub fn nudge(&self) {
        let mut queue = lock(&self.shared.queue);
        if queue.ticket > self.shared.progress.borrow().committed && !queue.nudged {
            queue.nudged = true;
            drop(queue);
            self.shared.wake.notify_one();
        }
    }

    /// Whether the store needs the whole state (see [`Writer::submit_snapshot`]).
    pub fn wants_snapshot(&self) -> bool {
        self.shared.wants_snapshot.load(Ordering::Acquire)
    }

    /// Replaces everything queued by `state`, the whole state as of `ticket` (taken under the
    /// same lock as the tickets, so that nothing submitted before it is missing from it).
    pub fn submit_snapshot(&self, ticket: u64, state: Vec<Mutation>) {
        self.shared.wants_snapshot.store(false, Ordering::Release);
        let mut queue = lock(&self.shared.queue);
        queue.changes.clear();
        queue.snapshot = Some(state);
        queue.ticket = ticket;
        queue.batches += 1;
        queue.nudged = true;
        drop(queue);
        self.shared.wake.notify_one();
    }

    pub fn progress(&self) -> Progress {
        self.shared.progress.borrow().clone()
    }

    /// Waits until every change up to `ticket` is committed. While the store fails, waits at
    /// most [`GRACE`] more for it to recover, then returns why it fails.
    pub async fn committed(&self, ticket: u64) -> Result<(), StoreFailed> {
        let mut rx = self.shared.progress.subscribe();
        let mut asked = false;
        let mut deadline: Option<(std::pin::Pin<Box<tokio::time::Sleep>>, Arc<str>)> = None;
        loop {
            let healthy = {
                let progress = rx.borrow_and_update();
                if progress.committed >= ticket {
                    return Ok(());
                }
                match &progress.failing {
                    Some(cause) if deadline.is_none() => {
                        deadline = Some((Box::pin(tokio::time::sleep(GRACE)), cause.clone()));
                    }
                    Some(cause) => {
                        if let Some((_, seen)) = &mut deadline {
                            *seen = cause.clone();
                        }
                    }
                    None => deadline = None,
                }
                progress.failing.is_none()
            };
            if !asked {
                asked = true;
                if healthy && self.inline && self.commit_lone() {
                    continue;
                }
                self.nudge();
            }
            match &mut deadline {
                None => {
                    if rx.changed().await.is_err() {
                        return Err(StoreFailed("the store has stopped".into()));
                    }
                }
                Some((sleep, cause)) => {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() {
                            return Err(StoreFailed("the store has stopped".into()));
                        },
                        _ = sleep => return Err(StoreFailed(cause.clone())),
                    }
                }
            }
        }
    }

    /// Commits a lone request's change here, when the store is free and nothing else is
    /// queued; returns whether it did.
    fn commit_lone(&self) -> bool {
        let Ok(mut committer) = self.shared.committer.try_lock() else {
            return false;
        };
        committer.take_and_commit(&self.shared, true)
    }

    /// Commits what is queued and stops the thread, waiting at most `within` (a store that
    /// still fails gets one more try). Returns why changes were left unstored, if they were.
    pub fn close(&self, within: Duration) -> Result<(), StoreFailed> {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        let (done, ended) = &self.shared.done;
        let (done, timeout) = ended
            .wait_timeout_while(lock(done), within, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        if *done {
            if let Some(thread) = lock(&self.thread).take() {
                let _ = thread.join();
            }
        }
        let progress = self.progress();
        let queued = lock(&self.shared.queue).ticket;
        match (timeout.timed_out(), progress.failing) {
            (_, Some(cause)) if progress.committed < queued => Err(StoreFailed(cause)),
            (true, _) if progress.committed < queued => Err(StoreFailed(
                format!("the last changes were still being written after {within:?}").into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A poisoned lock means a panic elsewhere; what it guards is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store's thread: commits when nudged, retries while commits fail, ends on `stop`.
fn run(shared: &Shared) {
    loop {
        let stop = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.nudged || queue.stop {
                    break;
                }
                if queue.retrying {
                    let retry_in = queue.retry_in;
                    let (q, waited) = shared
                        .wake
                        .wait_timeout(queue, retry_in)
                        .unwrap_or_else(|e| e.into_inner());
                    queue = q;
                    if waited.timed_out() {
                        break;
                    }
                } else {
                    queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            }
            queue.nudged = false;
            queue.stop
        };
        let mut committer = lock(&shared.committer);
        committer.take_and_commit(shared, false);
        if stop {
            if !committer.held.is_empty() {
                if let Some(cause) = &shared.progress.borrow().failing {
                    error!(
                        "stopping with {} changes not stored in {}: {cause}",
                        committer.held.len(),
                        committer.path.display()
                    );
                }
            }
            // Let go of the file (and its lock) for whoever opens it next.
            committer.store = None;
            return;
        }
    }
}

/// The store, and the changes not committed yet (a failed commit keeps them).
struct Committer {
    store: Option<Store>,
    path: PathBuf,
    sync: Sync,
    held: Vec<Mutation>,
    held_ticket: u64,
    retry_in: Duration,
    failing_since: Option<Instant>,
    reported: Option<Instant>,
}

impl Committer {
    fn new(store: Store) -> Self {
        Committer {
            path: store.path().to_owned(),
            sync: store.sync(),
            store: Some(store),
            held: Vec::new(),
            held_ticket: 0,
            retry_in: MIN_RETRY,
            failing_since: None,
            reported: None,
        }
    }

    /// Takes what is queued and commits it with what is held. `lone`: only when the queue
    /// holds one request's changes and nothing is held (else returns false, taking nothing).
    fn take_and_commit(&mut self, shared: &Shared, lone: bool) -> bool {
        {
            let mut queue = lock(&shared.queue);
            if lone && (queue.batches != 1 || queue.snapshot.is_some() || !self.held.is_empty()) {
                return false;
            }
            if let Some(state) = queue.snapshot.take() {
                // The whole state replaces what was held; it is written to a new file.
                self.held = state;
                self.store = None;
            }
            self.held.extend(std::mem::take(&mut queue.changes));
            self.held_ticket = self.held_ticket.max(queue.ticket);
            queue.batches = 0;
        }
        self.commit(shared);
        let mut queue = lock(&shared.queue);
        queue.retrying = !self.held.is_empty();
        queue.retry_in = self.retry_in;
        if queue.retrying {
            // The thread retries (a failed inline commit hands over to it).
            shared.wake.notify_one();
        }
        true
    }

    /// Whether the server has been asked for the whole state (the state file went away).
    fn wants_file(shared: &Shared) -> bool {
        shared.wants_snapshot.load(Ordering::Acquire)
    }

    /// Commits what is held, or says why it cannot.
    fn commit(&mut self, shared: &Shared) {
        if self.held.is_empty() {
            self.publish(shared, self.held_ticket, None);
            return;
        }
        if Self::wants_file(shared) {
            return; // the server answers with a snapshot within a second
        }
        if self.store.is_none() {
            match Store::open(&self.path, self.sync) {
                Ok(store) => {
                    info!(
                        "state file {} created again from the coordinator's memory",
                        self.path.display()
                    );
                    self.store = Some(store);
                }
                Err(e) => return self.failed(shared, e.to_string()),
            }
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Some(gone) = store.replaced() {
            // Every change written from now on would go into a file nobody can open again.
            shared.wants_snapshot.store(true, Ordering::Release);
            self.store = None;
            return self.failed(
                shared,
                format!(
                    "the state file {} {gone} while the coordinator ran; it is being written \
                     again from memory",
                    self.path.display()
                ),
            );
        }
        match store.apply(&self.held) {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    info!(
                        "the state is stored again in {} after {:.1}s of failing",
                        self.path.display(),
                        since.elapsed().as_secs_f64()
                    );
                }
                self.held.clear();
                self.retry_in = MIN_RETRY;
                self.reported = None;
                self.publish(shared, self.held_ticket, None);
            }
            Err(e) => {
                // Free what the journal holds, so that a full disk can recover.
                store.checkpoint();
                let cause = match crate::diagnose::state_file(&self.path) {
                    Some(cause) => format!("{} ({e}; cause: {cause})", self.path.display()),
                    None => format!("{}: {e}", self.path.display()),
                };
                self.held = coalesce(std::mem::take(&mut self.held));
                self.failed(shared, cause);
            }
        }
    }

    fn failed(&mut self, shared: &Shared, cause: String) {
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            error!(
                "cannot store the state: {cause}; {} changes wait, requests that change \
                 something are answered nack until it can (retrying)",
                self.held.len()
            );
            self.reported = Some(now);
        }
        self.retry_in = (self.retry_in * 2).min(MAX_RETRY);
        let committed = shared.progress.borrow().committed;
        self.publish(shared, committed, Some(cause.into()));
    }

    fn publish(&self, shared: &Shared, committed: u64, failing: Option<Arc<str>>) {
        shared.progress.send_if_modified(|p| {
            let changed = committed > p.committed || p.failing.is_some() != failing.is_some();
            p.committed = p.committed.max(committed);
            p.failing = failing;
            changed
        });
    }
}

/// The same changes with each row written once: the last data of each (group, id, sender)
/// at the place it was first written (senders keep their order), the last meta of each
/// group, and nothing of a group before its last deletion. Keeps what a failing store holds
/// bounded by the state's own size.
fn coalesce(changes: Vec<Mutation>) -> Vec<Mutation> {
    use std::collections::HashMap;
    let mut last_delete: HashMap<String, usize> = HashMap::new();
    for (i, m) in changes.iter().enumerate() {
        if let Mutation::DeleteGroup { group } = m {
            last_delete.insert(group.clone(), i);
        }
    }
    /// The row a change writes.
    #[derive(PartialEq, Eq, Hash)]
    enum Row {
        Deletion(String),
        Meta(String),
        Message(String, String, String),
        History(String, u64),
    }
    let mut out: Vec<Mutation> = Vec::new();
    let mut at: HashMap<Row, usize> = HashMap::new();
    // History rows are numbered upwards for good (history.rs): the highest trim of a group,
    // done last, is all its trims, and what it removes need not be written.
    let mut trims: HashMap<String, u64> = HashMap::new();
    for m in &changes {
        if let Mutation::TrimHistory { group, below } = m {
            let t = trims.entry(group.clone()).or_insert(0);
            *t = (*t).max(*below);
        }
    }
    for (i, m) in changes.into_iter().enumerate() {
        let (group, row) = match &m {
            Mutation::TrimHistory { .. } => continue,
            Mutation::PutHistory { group, seq, .. } => {
                if trims.get(group).is_some_and(|&t| *seq < t) {
                    continue;
                }
                (group, Row::History(group.clone(), *seq))
            }
            Mutation::DeleteGroup { group } => (group, Row::Deletion(group.clone())),
            Mutation::PutGroup { group, .. } => (group, Row::Meta(group.clone())),
            Mutation::PutMessage {
                group, id, sender, ..
            } => (
                group,
                Row::Message(group.clone(), id.clone(), sender.clone()),
            ),
        };
        let history = matches!(row, Row::History(..));
        if !history && last_delete.get(group).is_some_and(|&d| i < d) {
            continue;
        }
        match at.get(&row) {
            Some(&j) => out[j] = m,
            None => {
                at.insert(row, out.len());
                out.push(m);
            }
        }
    }
    out.extend(
        trims
            .into_iter()
            .map(|(group, below)| Mutation::TrimHistory { group, below }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(group: &str, meta: &str) -> Mutation {
        Mutation::PutGroup {
            group: group.into(),
            meta: meta.into(),
        }
    }

    fn message(group: &str, id: &str, sender: &str, data: &str) -> Mutation {
        Mutation::PutMessage {
            group: group.into(),
            id: id.into(),
            sender: sender.into(),
            data: data.into(),
        }
    }

    #[test]
    fn coalescing_keeps_the_last_of_each_row_in_first_written_order() {
        let out = coalesce(vec![
            put("g", "1"),
            message("g", "m", "b", "b1"),
            message("g", "m", "a", "a1"),
            put("h", "x"),
            message("g", "m", "b", "b2"),
            put("g", "2"),
        ]);
        assert_eq!(
            out,
            vec![
                put("g", "2"),
                message("g", "m", "b", "b2"),
                message("g", "m", "a", "a1"),
                put("h", "x"),
            ]
        );
    }

    #[test]
    fn coalescing_keeps_histories_past_their_groups_and_trims_last() {
        let row = |seq: u64, client: &str| Mutation::PutHistory {
            group: "g".into(),
            seq,
            dropped: 0,
            entry: Box::new(lava_protocol::timeline::Entry {
                seq,
                at_ms: 0,
                what: lava_protocol::timeline::What::Registered {
                    client: client.into(),
                    role: String::new(),
                },
            }),
        };
        let trim = |below: u64| Mutation::TrimHistory {
            group: "g".into(),
            below,
        };
        let out = coalesce(vec![
            row(1, "a"),
            row(2, "b"),
            trim(2),
            row(2, "b2"),
            Mutation::DeleteGroup { group: "g".into() },
            row(3, "c"),
            trim(3),
        ]);
        assert_eq!(
            out,
            vec![
                Mutation::DeleteGroup { group: "g".into() },
                row(3, "c"),
                trim(3),
            ],
            "rows below the highest trim are not written; a deletion of the group keeps the rest"
        );
    }

    #[test]
    fn coalescing_drops_what_a_later_deletion_removes() {
        let del = Mutation::DeleteGroup { group: "g".into() };
        let out = coalesce(vec![
            put("g", "old"),
            message("g", "m", "a", "old"),
            del.clone(),
            put("g", "new"),
            put("h", "kept"),
        ]);
        assert_eq!(out, vec![del, put("g", "new"), put("h", "kept")]);
    }

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lc-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.db")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn stored_groups(path: &std::path::Path) -> Vec<String> {
        let mut store = Store::open(path, Sync::Normal).unwrap();
        let mut names: Vec<String> = store
            .load(Instant::now())
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        names.sort();
        names
    }

    /// A group's rows, as the state machine writes them: 20 kB of data, more than a page.
    fn group_row(name: &str) -> Vec<Mutation> {
        let mut machine = crate::state::Coordinator::new(Duration::from_secs(60));
        let mut req = lava_protocol::Request::new(
            name,
            "a",
            "r",
            lava_protocol::RequestKind::Send {
                id: "m".into(),
                message: serde_json::json!({"k": "v".repeat(20_000)}),
            },
        );
        req.group_size = Some(2);
        machine.handle(&req, Instant::now(), None);
        machine.take_mutations()
    }

    /// Many tasks submit and wait at once, as the server's connections do: every one of them
    /// sees its batch committed.
    #[test]
    fn concurrent_waiters_all_get_committed() {
        let path = temp_db("many");
        let writer = Arc::new(Writer::start(Store::open(&path, Sync::Normal).unwrap()).unwrap());
        let ticket = Arc::new(Mutex::new(0u64));
        runtime().block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let (writer, ticket) = (writer.clone(), ticket.clone());
                    tokio::spawn(async move {
                        for i in 0..50 {
                            let mine = {
                                let mut last = ticket.lock().unwrap();
                                *last += 1;
                                writer.submit(*last, vec![put(&format!("g{t}"), &format!("{i}"))]);
                                *last
                            };
                            writer.committed(mine).await.unwrap();
                        }
                    })
                })
                .collect();
            let all = async {
                for t in tasks {
                    t.await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(30), all)
                .await
                .expect("every waiter saw its commit");
        });
        assert_eq!(writer.progress().committed, 64 * 50);
        writer.close(Duration::from_secs(5)).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Issue 15, finding 3: a full disk answers the waiter with the cause within the grace
    /// period, keeps the runtime free for other work, and commits the held change by itself
    /// once space returns.
    #[test]
    fn a_full_disk_is_answered_with_its_cause_and_recovers_by_itself() {
        let path = temp_db("full");
        let store = Store::open(&path, Sync::Normal).unwrap();
        let cap = store.page_cap.clone();
        let writer = Writer::start(store).unwrap();
        writer.submit(1, group_row("before"));
        let rt = runtime();
        rt.block_on(writer.committed(1)).unwrap();
        cap.store(2, std::sync::atomic::Ordering::Relaxed);
        writer.submit(2, group_row("during"));
        let started = Instant::now();
        let failed = rt.block_on(async {
            // The runtime still runs other tasks meanwhile.
            let other = tokio::spawn(async { 42 });
            assert_eq!(other.await.unwrap(), 42);
            writer.committed(2).await
        });
        let cause = failed
            .expect_err("a full store fails the commit")
            .to_string();
        assert!(cause.contains("full"), "{cause}");
        assert!(cause.contains("state.db"), "names the file: {cause}");
        assert!(started.elapsed() < GRACE + Duration::from_secs(3));
        assert!(writer.progress().failing.is_some());
        cap.store(0, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), writer.committed(2)).await
        })
        .expect("committed once space returned")
        .unwrap();
        assert!(writer.progress().failing.is_none());
        writer.close(Duration::from_secs(5)).unwrap();
        assert_eq!(stored_groups(&path), ["before", "during"]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Closing with a store that still fails ends within the bound and says why.
    #[test]
    fn closing_on_a_full_disk_ends_and_names_the_cause() {
        let path = temp_db("close");
        let store = Store::open(&path, Sync::Normal).unwrap();
        store
            .page_cap
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let writer = Writer::start(store).unwrap();
        writer.submit(1, group_row("g"));
        let started = Instant::now();
        let e = writer
            .close(Duration::from_secs(3))
            .expect_err("not stored");
        assert!(e.to_string().contains("full"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Issue 15, finding 4: a state file deleted under the coordinator is noticed before the
    /// next commit, which is not acknowledged until the whole state is written to a new file.
    #[test]
    fn a_deleted_state_file_is_written_again_from_a_snapshot() {
        let path = temp_db("vanish");
        let writer = Writer::start(Store::open(&path, Sync::Normal).unwrap()).unwrap();
        let rt = runtime();
        writer.submit(1, group_row("old"));
        rt.block_on(writer.committed(1)).unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        writer.submit(2, group_row("new"));
        let e = rt
            .block_on(writer.committed(2))
            .expect_err("not acknowledged into a deleted file");
        assert!(e.to_string().contains("was deleted"), "{e}");
        assert!(writer.wants_snapshot());
        writer.submit_snapshot(3, [group_row("old"), group_row("new")].concat());
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), writer.committed(3)).await
        })
        .expect("the snapshot was written")
        .unwrap();
        writer.close(Duration::from_secs(5)).unwrap();
        assert_eq!(stored_groups(&path), ["new", "old"]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
