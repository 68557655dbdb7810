//! Durable state in SQLite: each group's members, roster, syncs and cleared members as one
//! row, and each (message id, sender)'s data as a row of its own, so that a send writes only
//! what it changed. What the state machine changed is committed in batches (group commit) by
//! the first task that needs it stored; replies wait for that before they leave.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tracing::{error, warn};

use crate::state::{Group, Mutation};

/// Bumped when the schema changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state file {path} has schema version {found}; this coordinator reads {SCHEMA_VERSION}"
    )]
    Version { path: PathBuf, found: i64 },
    #[error("state file {path}: group {group:?} is unreadable: {reason}")]
    Corrupt {
        path: PathBuf,
        group: String,
        reason: String,
    },
    #[error("cannot create the folder of the state file {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How hard a commit tries to survive: `Full` survives power loss, `Normal` (WAL without
/// fsync per commit) survives a crash or `kill -9` of the coordinator only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    Full,
    Normal,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    sync: Sync,
    /// Orders each id's senders as they first sent.
    next_seq: i64,
    /// The file opened, and its (device, inode): a file with no name left, or a path that
    /// leads elsewhere, means the state file was deleted, replaced or moved.
    file: Option<std::fs::File>,
    identity: Option<(u64, u64)>,
    /// The last look at the path (an `fstat` of `file` is cheaper and runs every commit).
    path_checked: std::cell::Cell<Instant>,
    /// Tests fill the "disk" by capping the file's pages (SQLite then fails as on a full disk).
    #[cfg(test)]
    pub(crate) page_cap: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// The journal is checkpointed into the state file every this many pages (of 4 KiB: SQLite's
/// default, as a checkpoint costs an fsync) and cut back to `JOURNAL_LIMIT` bytes after that
/// (a large transaction would otherwise leave it large), and after a failed commit.
const CHECKPOINT_PAGES: u32 = 1000;
const JOURNAL_LIMIT: u64 = 4 << 20;

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// One group from its stored rows, or why it cannot be read.
fn read_group(
    name: &str,
    meta: &str,
    messages: &[(String, String, String)],
    now: Instant,
) -> Result<Group, String> {
    let messages = messages
        .iter()
        .map(|(id, sender, data)| {
            serde_json::from_str::<Value>(data)
                .map(|data| (id.clone(), sender.clone(), data))
                .map_err(|e| format!("message {id:?} of {sender:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Group::restore(name, meta, messages, now).map_err(|e| e.to_string())
}

impl Store {
    /// Opens (or creates) the state file and takes it for this process alone.
    pub fn open(path: &Path, sync: Sync) -> Result<Store, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                path: path.to_owned(),
                source,
            })?;
        }
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // Nobody else should hold the file: fail fast rather than wait for them.
        conn.busy_timeout(Duration::from_millis(200)).map_err(err)?;
        let synchronous = match sync {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        };
        // Exclusive: a second coordinator on the same file fails at start, not later.
        conn.execute_batch(&format!(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {synchronous};
             PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};
             PRAGMA journal_size_limit = {JOURNAL_LIMIT};
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, meta TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS messages (
                 grp TEXT NOT NULL, id TEXT NOT NULL, sender TEXT NOT NULL,
                 seq INTEGER NOT NULL, data TEXT NOT NULL,
                 PRIMARY KEY (grp, id, sender));
             CREATE TABLE IF NOT EXISTS history (
                 grp TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL,
                 PRIMARY KEY (grp, seq));
             CREATE TABLE IF NOT EXISTS set_aside (
                 name TEXT NOT NULL, reason TEXT NOT NULL, meta TEXT NOT NULL,
                 messages TEXT NOT NULL, at INTEGER NOT NULL);
             BEGIN EXCLUSIVE; COMMIT;"
        ))
        .map_err(err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        match version {
            None => {
                conn.execute("INSERT INTO meta VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(err)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(StoreError::Version {
                    path: path.to_owned(),
                    found,
                })
            }
        }
        let next_seq = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages", [], |r| {
                r.get(0)
            })
            .map_err(err)?;
        Ok(Store {
            conn,
            sync,
            path: path.to_owned(),
            next_seq,
            file: std::fs::File::open(path).ok(),
            identity: identity(path),
            path_checked: std::cell::Cell::new(Instant::now()),
            #[cfg(test)]
            page_cap: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sync(&self) -> Sync {
        self.sync
    }

    /// How the state file was lost, if this store writes a file that is no longer at its
    /// path (`"was deleted or replaced"`, `"was moved"`). Every call looks at the open file
    /// (one `fstat`: deleting it, its folder, or moving another file over it leaves it with
    /// no name); once a second also at the path (a folder moved away).
    pub fn replaced(&self) -> Option<&'static str> {
        if let Some(file) = &self.file {
            if file.metadata().is_ok_and(|m| m.nlink() == 0) {
                return Some("was deleted or replaced");
            }
        }
        let now = Instant::now();
        if now.duration_since(self.path_checked.get()) < Duration::from_secs(1) {
            return None;
        }
        self.path_checked.set(now);
        match (identity(&self.path), self.identity) {
            (None, _) => Some("was deleted or moved"),
            (Some(now), Some(opened)) if now != opened => Some("was replaced by another file"),
            _ => None,
        }
    }

    /// Moves the journal into the state file and truncates it (best effort: after a failed
    /// commit, to give space back).
    pub fn checkpoint(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            warn!(
                "cannot checkpoint the journal of {}: {e}",
                self.path.display()
            );
        }
    }

    /// Reads every stored group. A group that cannot be read back is moved to the table
    /// `set_aside` (its rows kept as they were, with the reason) and logged at ERROR: one bad
    /// group must not cost the lab every other one.
    pub fn load(&mut self, now: Instant) -> Result<Vec<Group>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let rows: Vec<(String, String)> = self
            .conn
            .prepare("SELECT name, meta FROM groups")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(err)?;
        let mut groups = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        {
            let mut messages_stmt = self
                .conn
                .prepare("SELECT id, sender, data FROM messages WHERE grp = ?1 ORDER BY seq")
                .map_err(err)?;
            for (name, meta) in rows {
                let messages: Vec<(String, String, String)> = messages_stmt
                    .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .and_then(|rows| rows.collect::<Result<_, _>>())
                    .map_err(err)?;
                match read_group(&name, &meta, &messages, now) {
                    Ok(group) => groups.push(group),
                    Err(reason) => unreadable.push((name, meta, messages, reason)),
                }
            }
        }
        for (name, meta, messages, reason) in unreadable {
            let corrupt = StoreError::Corrupt {
                path: path.clone(),
                group: name.clone(),
                reason: reason.clone(),
            };
            self.set_aside(&name, &meta, &messages, &reason)
                .map_err(err)?;
            error!("{corrupt}; set aside in table set_aside, the other groups are restored");
        }
        Ok(groups)
    }

    /// Every stored history row: (group, seq, entry).
    pub fn load_history(&mut self) -> Result<Vec<(String, u64, String)>, StoreError> {
        let path = self.path.clone();
        self.conn
            .prepare("SELECT grp, seq, entry FROM history ORDER BY grp, seq")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(|source| StoreError::Sqlite { path, source })
    }

    fn set_aside(
        &mut self,
        name: &str,
        meta: &str,
        messages: &[(String, String, String)],
        reason: &str,
    ) -> rusqlite::Result<()> {
        let messages = serde_json::to_string(messages).unwrap_or_default();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO set_aside (name, reason, meta, messages, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, reason, meta, messages, at],
        )?;
        tx.execute("DELETE FROM groups WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM messages WHERE grp = ?1", [name])?;
        tx.commit()
    }

    /// Applies mutations in one transaction.
    pub fn apply(&mut self, mutations: &[Mutation]) -> rusqlite::Result<()> {
        #[cfg(test)]
        {
            let cap = self.page_cap.load(std::sync::atomic::Ordering::Relaxed);
            let cap = if cap == 0 { 1 << 30 } else { cap };
            self.conn
                .execute_batch(&format!("PRAGMA max_page_count = {cap};"))?;
        }
        let tx = self.conn.transaction()?;
        let mut next_seq = self.next_seq;
        {
            let mut delete_group = tx.prepare_cached("DELETE FROM groups WHERE name = ?1")?;
            let mut delete_messages = tx.prepare_cached("DELETE FROM messages WHERE grp = ?1")?;
            let mut put_group = tx.prepare_cached(
                "INSERT INTO groups (name, meta) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET meta = excluded.meta",
            )?;
            let mut put_message = tx.prepare_cached(
                "INSERT INTO messages (grp, id, sender, seq, data) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (grp, id, sender) DO UPDATE SET data = excluded.data",
            )?;
            let mut put_history = tx.prepare_cached(
                "INSERT INTO history (grp, seq, entry) VALUES (?1, ?2, ?3)
                 ON CONFLICT (grp, seq) DO UPDATE SET entry = excluded.entry",
            )?;
            let mut trim_history =
                tx.prepare_cached("DELETE FROM history WHERE grp = ?1 AND seq < ?2")?;
            for m in mutations {
                match m {
                    Mutation::PutHistory {
                        group,
                        seq,
                        dropped,
                        entry,
                    } => {
                        let text = crate::history::row_text(*dropped, entry);
                        put_history.execute(params![group, *seq as i64, text])?;
                    }
                    Mutation::TrimHistory { group, below } => {
                        trim_history
                            .execute(params![group, (*below).min(i64::MAX as u64) as i64])?;
                    }
                    Mutation::DeleteGroup { group } => {
                        delete_group.execute([group])?;
                        delete_messages.execute([group])?;
                    }
                    Mutation::PutGroup { group, meta } => {
                        put_group.execute([group, meta])?;
                    }
                    Mutation::PutMessage {
                        group,
                        id,
                        sender,
                        data,
                    } => {
                        put_message.execute(params![group, id, sender, next_seq, data])?;
                        next_seq += 1;
                    }
                }
            }
        }
        tx.commit()?;
        self.next_seq = next_seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Coordinator;
    use lava_protocol::{Reply, Request, RequestKind};
    use serde_json::json;

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lc-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.db")
    }

    fn req(client: &str, kind: RequestKind) -> Request {
        let mut r = Request::new("g", client, "r", kind);
        r.group_size = Some(3);
        r
    }

    /// Runs requests through a machine, storing every change as the server does.
    fn run(machine: &mut Coordinator, store: &mut Store, reqs: Vec<Request>) -> Vec<Reply> {
        let now = Instant::now();
        reqs.iter()
            .map(|r| {
                let out = machine.handle(r, now, None);
                store.apply(&machine.take_mutations()).unwrap();
                out.reply.unwrap()
            })
            .collect()
    }

    #[test]
    fn a_restored_group_continues_where_it_stopped() {
        let path = temp_db("restore");
        let mut machine = Coordinator::new(Duration::from_secs(3600));
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let send = |id: &str, v: serde_json::Value| RequestKind::Send {
            id: id.into(),
            message: v,
        };
        let sync = || RequestKind::Sync {
            id: "s".into(),
            message: json!({}),
        };
        run(
            &mut machine,
            &mut store,
            vec![
                req("b", send("m", json!({"k": "1"}))),
                req("a", send("m", json!({"k": "é"}))),
                req("b", send("m", json!({"k": "2"}))),
                req("a", sync()),
                req("b", sync()),
                req("a", RequestKind::ClearGroup),
            ],
        );
        drop(store);

        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let mut restored = Coordinator::new(Duration::from_secs(3600));
        for g in store.load(Instant::now()).unwrap() {
            restored.restore(g);
        }
        let group = restored.group("g").unwrap();
        assert_eq!(group.members.len(), 2);
        assert!(group.cleared.contains("a"));
        let replies = run(
            &mut restored,
            &mut store,
            vec![
                req("c", RequestKind::Wait { id: "m".into() }),
                req("c", sync()),
                req("a", sync()),
            ],
        );
        // Senders keep their first-send order; b's data is its latest.
        assert_eq!(
            replies[0],
            Reply::ack_message(json!({"b": {"k": "2"}, "a": {"k": "é"}}))
        );
        assert_eq!(
            replies[1],
            Reply::ack_message(json!("s")),
            "the arrivals were kept"
        );
        assert_eq!(replies[2], Reply::ack_message(json!("s")));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_cleared_group_is_gone_after_a_restart_and_its_name_reusable() {
        let path = temp_db("clear");
        let mut machine = Coordinator::new(Duration::from_secs(3600));
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let one = |client: &str, kind| {
            let mut r = req(client, kind);
            r.group_size = Some(1);
            r
        };
        run(
            &mut machine,
            &mut store,
            vec![
                one(
                    "a",
                    RequestKind::Send {
                        id: "old".into(),
                        message: json!({}),
                    },
                ),
                one("a", RequestKind::ClearGroup),
                one(
                    "z",
                    RequestKind::Send {
                        id: "new".into(),
                        message: json!({}),
                    },
                ),
            ],
        );
        drop(store);
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let groups = store.load(Instant::now()).unwrap();
        assert_eq!(groups.len(), 1);
        assert!(groups[0].members.contains_key("z"));
        assert!(
            !groups[0].messages.contains_key("old"),
            "rows of the cleared group are gone"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A message nested `levels` deep, as a client would send it.
    fn nested(levels: usize) -> serde_json::Value {
        (0..levels).fold(json!("v"), |inner, _| json!({ "k": inner }))
    }

    /// The deepest message a request may carry is read back after a restart, in a sync
    /// (stored inside the group's row) and in a send (a row of its own).
    #[test]
    fn the_deepest_accepted_message_survives_a_restart() {
        let path = temp_db("deep");
        let mut machine = Coordinator::new(Duration::from_secs(3600));
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let body = |request: &str| {
            json!({"request": request, "group_name": "g", "client_name": "a",
                   "role": "r", "group_size": 3, "messageID": "deep",
                   "message": nested(lava_protocol::message::MAX_MESSAGE_DEPTH)})
            .to_string()
        };
        let too_deep = json!({"request": "lava_sync", "group_name": "g", "client_name": "a",
            "messageID": "x", "message": nested(lava_protocol::message::MAX_MESSAGE_DEPTH + 1)});
        assert!(Request::parse(&too_deep.to_string()).is_err());
        let reqs = vec![
            Request::parse(&body("lava_send")).unwrap(),
            Request::parse(&body("lava_sync")).unwrap(),
        ];
        run(&mut machine, &mut store, reqs);
        drop(store);
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let groups = store.load(Instant::now()).unwrap();
        assert_eq!(groups.len(), 1, "the group was read back");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// One group that cannot be read back is set aside (rows kept, reason given); every
    /// other group is restored and the coordinator starts.
    #[test]
    fn an_unreadable_group_is_set_aside_and_the_rest_restored() {
        let path = temp_db("aside");
        let mut machine = Coordinator::new(Duration::from_secs(3600));
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        run(
            &mut machine,
            &mut store,
            vec![req(
                "a",
                RequestKind::Send {
                    id: "m".into(),
                    message: json!({"k": "1"}),
                },
            )],
        );
        // As a coordinator without the depth bound stored it (finding: a sync message 123
        // levels deep was accepted, and no restart could read the state file again).
        let mut deep = Request::new(
            "broken",
            "a",
            "r",
            RequestKind::Sync {
                id: "s".into(),
                message: nested(123),
            },
        );
        deep.group_size = Some(2);
        run(&mut machine, &mut store, vec![deep]);
        store
            .apply(&[Mutation::PutGroup {
                group: "garbled".into(),
                meta: "not json".into(),
            }])
            .unwrap();
        drop(store);

        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let groups = store.load(Instant::now()).unwrap();
        let names: Vec<_> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["g"]);
        let aside: Vec<(String, String)> = store
            .conn
            .prepare("SELECT name, reason FROM set_aside ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert_eq!(aside[0].0, "broken");
        assert!(aside[0].1.contains("recursion limit"), "{aside:?}");
        assert_eq!(aside[1].0, "garbled");
        drop(store);
        // Set aside once: the next start restores the good group without complaint.
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        assert_eq!(store.load(Instant::now()).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Finding 5 of issue 15: what counts against the limits (names, sync messages, sent
    /// data) counts the same after a restart, and a refused request wrote nothing.
    #[test]
    fn kept_bytes_count_the_same_after_a_restart() {
        let path = temp_db("bytes");
        let limits = crate::state::Limits {
            max_total_bytes: 2000,
            ..Default::default()
        };
        let mut machine = Coordinator::new(Duration::from_secs(3600)).with_limits(limits.clone());
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let sync = |message| RequestKind::Sync {
            id: "s".into(),
            message,
        };
        let replies = run(
            &mut machine,
            &mut store,
            vec![
                req("a-long-client-name", sync(json!({"k": "v".repeat(100)}))),
                req(
                    "b",
                    RequestKind::Send {
                        id: "m".into(),
                        message: json!({"k": "w".repeat(100)}),
                    },
                ),
                req("b", sync(json!({}))),
                req(
                    "c",
                    RequestKind::Fail {
                        reason: "r".repeat(50),
                    },
                ),
                req(
                    "b",
                    RequestKind::Send {
                        id: "m".into(),
                        message: json!({"k": "x".repeat(3000)}),
                    },
                ),
            ],
        );
        assert_eq!(replies[4].response, lava_protocol::Response::Nack);
        let kept = machine.total_bytes();
        assert!(kept > 300, "{kept}");
        assert_eq!(kept, machine.recount_bytes());
        drop(store);
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let mut restored = Coordinator::new(Duration::from_secs(3600)).with_limits(limits);
        for g in store.load(Instant::now()).unwrap() {
            restored.restore(g);
        }
        assert_eq!(restored.total_bytes(), kept);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Issue 15, finding 3: the journal is checkpointed and cut back, so that it stays small
    /// on a small file system however much is written.
    #[test]
    fn the_journal_stays_bounded() {
        let path = temp_db("wal");
        let mut store = Store::open(&path, Sync::Normal).unwrap();
        let wal = path.with_extension("db-wal");
        let mut largest = 0;
        for i in 0..400 {
            store
                .apply(&[Mutation::PutMessage {
                    group: "g".into(),
                    id: format!("m{i}"),
                    sender: "a".into(),
                    data: format!("\"{}\"", "x".repeat(20_000)),
                }])
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // 8 MB written; the journal never grows past its checkpoint size and one commit.
        let bound = u64::from(CHECKPOINT_PAGES) * 4096 + 64 * 1024;
        assert!(largest > 0, "the journal is at {}", wal.display());
        assert!(
            largest <= bound,
            "journal grew to {largest} bytes (bound {bound})"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_second_coordinator_cannot_take_the_same_file() {
        let path = temp_db("lock");
        let _first = Store::open(&path, Sync::Normal).unwrap();
        assert!(Store::open(&path, Sync::Normal).is_err());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
