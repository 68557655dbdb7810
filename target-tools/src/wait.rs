//! Talking to the coordinator: one request per connection, retried with backoff while the
//! coordinator cannot be reached, and the wait loop.
//!
//! A waiting request carries `"block": SLICE`: our coordinator holds the connection and
//! answers the moment the condition holds, or `wait` when the slice is up, so the loop simply
//! asks again. LAVA's coordinator ignores `block` and answers `wait` at once; a `wait` that
//! comes back faster than the polling interval is followed by a sleep of that interval.

use std::time::{Duration, Instant};

use lava_protocol::{Client, ClientError, Reply, Request, RequestKind, Response};

use crate::config::{Config, Key};
use crate::error::Error;

/// The longest `block` one request asks for.
pub const BLOCK_SLICE: Duration = Duration::from_secs(25);
/// First and longest pause between attempts to reach the coordinator.
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest connect timeout and the longest wait for a reply beyond `block`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest timeouts given to a socket (zero is refused by the OS API).
const MIN_CONNECT: Duration = Duration::from_millis(10);
const MIN_IO: Duration = Duration::from_millis(500);

/// Who this node is and how long it may take: every request of one tool run.
#[derive(Debug, Clone)]
pub struct Session {
    pub addr: String,
    pub group: String,
    pub client: String,
    pub role: String,
    pub hostname: String,
    pub group_size: Option<u32>,
    pub timeout: Duration,
    pub poll: Duration,
    /// Sent with waiting requests (see `Key::Lease`).
    pub lease: Duration,
    pub start: Instant,
    pub debug: bool,
    /// The lab's and the group's secrets, when configured.
    pub secret: Option<String>,
    pub group_secret: Option<String>,
    /// Names this command's call across its retries (`request_id`): a `lava-sync` whose
    /// `ack` was lost to a reset or a coordinator restart is answered again, not re-run.
    pub call_id: String,
}

/// A name for this call, unique enough across the group's nodes and their calls.
pub fn call_id(client: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{client}-{}-{nanos}", std::process::id())
}

/// This machine's host name (LAVA's coordinator records it for every new client and fails
/// without it).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Session {
    /// The session of a command that talks to the coordinator: every setting it needs must
    /// be set.
    pub fn from_config(cfg: &Config, debug: bool) -> Result<Session, Error> {
        Ok(Session {
            addr: cfg.coordinator()?,
            group: cfg.require(Key::Group)?.to_owned(),
            client: cfg.require(Key::Client)?.to_owned(),
            role: cfg.require(Key::Role)?.to_owned(),
            hostname: hostname(),
            group_size: cfg.group_size()?,
            timeout: cfg.timeout()?,
            poll: cfg.poll()?,
            lease: cfg.lease()?,
            start: Instant::now(),
            debug,
            call_id: call_id(cfg.require(Key::Client)?),
            secret: cfg.get(Key::Secret).map(str::to_owned),
            group_secret: cfg.get(Key::GroupSecret).map(str::to_owned),
        })
    }

    fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.start.elapsed())
    }

    /// `last`: the command will not ask again after a `wait` (its timeout ends with this
    /// ask): it promises no lease (`"lease": 0`), so that giving up is not taken for a
    /// killed tool.
    fn request(&self, kind: RequestKind, block: Option<Duration>, last: bool) -> Request {
        let mut req = Request::new(&self.group, &self.client, &self.role, kind);
        req.hostname = Some(self.hostname.clone());
        req.group_size = self.group_size;
        // Milliseconds are plenty, and keep the JSON short.
        req.block = block.map(|b| (b.as_secs_f64() * 1000.0).floor() / 1000.0);
        req.request_id = Some(self.call_id.clone());
        // Only a waiting call promises to ask again.
        req.lease = block.map(|_| match last {
            true => 0.0,
            false => self.lease.as_secs_f64(),
        });
        req.secret = self.secret.clone();
        req.group_secret = self.group_secret.clone();
        req
    }

    /// Sends one request and returns its reply (`wait` included); while the coordinator
    /// cannot be reached, tries again with backoff until the timeout. `nack` is an error.
    fn attempt(
        &self,
        kind: &RequestKind,
        block: Option<Duration>,
        last: bool,
    ) -> Result<Reply, Error> {
        let request = self.request(kind.clone(), block, last);
        let mut backoff = BACKOFF_START;
        let mut failing_since: Option<Instant> = None;
        loop {
            let remaining = self.remaining();
            let client = Client::new(self.addr.clone())
                .with_connect_timeout(remaining.clamp(MIN_CONNECT, CONNECT_TIMEOUT))
                .with_io_timeout(
                    remaining
                        .saturating_sub(block.unwrap_or_default())
                        .clamp(MIN_IO, IO_TIMEOUT),
                );
            if self.debug {
                eprintln!("> {}", request.to_json());
            }
            match client.call(&request) {
                Ok(reply) => {
                    if self.debug {
                        eprintln!("< {}", reply.to_json());
                    }
                    return match reply.response {
                        Response::Nack => Err(Error::Nack {
                            request: kind.name(),
                            error: reply.error,
                        }),
                        _ => Ok(reply),
                    };
                }
                Err(e) if e.is_transient() => {
                    if self.debug {
                        eprintln!("! {e}");
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let remaining = self.remaining();
                    if remaining.is_zero() {
                        return Err(Error::Unreachable {
                            addr: self.addr.clone(),
                            after: since.elapsed(),
                            last: e.to_string(),
                        });
                    }
                    std::thread::sleep(backoff.min(remaining));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e @ ClientError::Resolve(_)) => {
                    return Err(Error::Unreachable {
                        addr: self.addr.clone(),
                        after: self.start.elapsed(),
                        last: e.to_string(),
                    })
                }
                Err(e) => return Err(Error::BadReply(e.to_string())),
            }
        }
    }

    /// Asks once, without waiting: the reply as it is now (`wait` included; `"block": 0`, so
    /// that a coordinator holding plain requests answers at once too).
    #[cfg_attr(not(feature = "vm-group"), allow(dead_code))]
    pub fn ask(&self, kind: RequestKind) -> Result<Reply, Error> {
        self.attempt(&kind, Some(Duration::ZERO), false)
    }

    /// Asks once, without waiting, and will not ask again (`lava-lock --try`): the reply
    /// as it is now, `wait` included.
    pub fn ask_once(&self, kind: RequestKind) -> Result<Reply, Error> {
        self.attempt(&kind, Some(Duration::ZERO), true)
    }

    /// A request that is answered at once (`lava_send`, `vm_start`, ...); `wait` is an
    /// unexpected reply.
    pub fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        let reply = self.attempt(&kind, None, false)?;
        if reply.is_wait() {
            return Err(Error::BadReply(format!(
                "`wait` to `{}`, which is answered at once",
                kind.name()
            )));
        }
        Ok(reply)
    }

    /// A request answered `wait` until its condition holds: asks again, in `block` slices
    /// (or every polling interval against a coordinator that answers at once), until the
    /// reply is something else or the timeout is up. `what` completes "waiting for ...".
    pub fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error> {
        loop {
            let remaining = self.remaining();
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: self.timeout,
                });
            }
            let asked = Instant::now();
            let last = remaining <= BLOCK_SLICE;
            let reply = self.attempt(&kind, Some(remaining.min(BLOCK_SLICE)), last)?;
            if !reply.is_wait() {
                return Ok(reply);
            }
            if asked.elapsed() < self.poll {
                std::thread::sleep(self.poll.min(self.remaining()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A server on loopback that answers each connection with the next canned reply (after
    /// `delay`) and reports every request body it read.
    fn fake_server(
        replies: Vec<(&'static str, Duration)>,
    ) -> (String, mpsc::Receiver<serde_json::Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (reply, delay) in replies {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let body = lava_protocol::frame::read_frame(&mut conn, 1 << 20)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let _ = tx.send(serde_json::from_str(&body).unwrap_or_default());
                std::thread::sleep(delay);
                let _ = conn.write_all(&lava_protocol::frame::encode(reply));
            }
        });
        (addr, rx)
    }

    fn session(addr: &str, timeout: f64, poll: f64) -> Session {
        Session {
            addr: addr.to_owned(),
            group: "g".into(),
            client: "c".into(),
            role: "r".into(),
            hostname: "h".into(),
            group_size: Some(2),
            timeout: Duration::from_secs_f64(timeout),
            poll: Duration::from_secs_f64(poll),
            lease: Duration::from_secs(10),
            start: Instant::now(),
            debug: false,
            call_id: call_id("c"),
            secret: None,
            group_secret: None,
        }
    }

    const WAIT: &str = r#"{"response": "wait"}"#;
    const ACK: &str = r#"{"response": "ack", "message": {"a": {"k": "v"}}}"#;

    #[test]
    fn fast_waits_are_polled_and_requests_carry_identity() {
        let none = Duration::ZERO;
        let (addr, rx) = fake_server(vec![(WAIT, none), (WAIT, none), (ACK, none)]);
        let s = session(&addr, 10.0, 0.2);
        let started = Instant::now();
        let reply = s.wait(RequestKind::Wait { id: "m".into() }, "m").unwrap();
        // Two immediate `wait`s: two polling pauses.
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(reply.message.unwrap()["a"]["k"], "v");
        let first = rx.recv().unwrap();
        assert_eq!(first["request"], "lava_wait");
        assert_eq!(first["hostname"], "h");
        assert_eq!(first["role"], "r");
        assert_eq!(first["group_size"], 2);
        let block = first["block"].as_f64().unwrap();
        assert!(block > 9.0 && block <= 10.0, "{block}");
        // Its timeout ends within this slice: it promises no further ask.
        assert_eq!(first["lease"], 0.0);
        // Every retry of the call carries the same request_id.
        let id = first["request_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("c-"));
        assert_eq!(rx.recv().unwrap()["request_id"], id.as_str());
        assert_eq!(rx.recv().unwrap()["request_id"], id.as_str());
    }

    #[test]
    fn slow_waits_are_not_polled() {
        // A coordinator that held the request longer than the polling interval (as ours does
        // with `block`): asked again at once. A pause would make it take 1.9 s or more.
        let held = Duration::from_secs(1);
        let (addr, rx) = fake_server(vec![(WAIT, held), (ACK, Duration::ZERO)]);
        let s = session(&addr, 100.0, 0.9);
        let started = Instant::now();
        s.wait(
            RequestKind::Sync {
                id: "s".into(),
                message: serde_json::Value::Null,
            },
            "s",
        )
        .unwrap();
        let took = started.elapsed();
        assert!(
            took >= held && took < Duration::from_millis(1700),
            "{took:?}"
        );
        // Slices never exceed BLOCK_SLICE; one with time left after it carries the lease.
        let first = rx.recv().unwrap();
        assert_eq!(first["block"], 25.0);
        assert_eq!(first["lease"], 10.0);
    }

    #[test]
    fn nack_with_and_without_reason() {
        let (addr, _rx) = fake_server(vec![
            (r#"{"response": "nack"}"#, Duration::ZERO),
            (
                r#"{"response": "nack", "error": "no such role"}"#,
                Duration::ZERO,
            ),
        ]);
        let s = session(&addr, 5.0, 0.1);
        let bare = s.wait(RequestKind::Roster, "roster").unwrap_err();
        assert!(bare.is_bare_nack());
        let ours = s.call(RequestKind::VmWaitStart).unwrap_err();
        assert!(!ours.is_bare_nack());
        assert_eq!(ours.exit_code(), crate::error::EXIT_NACK);
        assert!(ours.to_string().contains("no such role"));
    }

    #[test]
    fn timeout_and_unreachable() {
        let (addr, _rx) = fake_server(vec![(WAIT, Duration::ZERO); 100]);
        let s = session(&addr, 0.5, 0.1);
        let started = Instant::now();
        let err = s
            .wait(RequestKind::Wait { id: "m".into() }, "m")
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Nothing listens on the port of a dropped listener.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = session(&port.to_string(), 0.5, 0.1);
        let err = s
            .call(RequestKind::Send {
                id: "m".into(),
                message: serde_json::json!({}),
            })
            .unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::EXIT_COORDINATOR);
    }

    #[test]
    fn garbage_is_a_bad_reply() {
        let (addr, _rx) = fake_server(vec![(r#"{"response": "maybe"}"#, Duration::ZERO)]);
        let err = session(&addr, 5.0, 0.1)
            .call(RequestKind::Complete)
            .unwrap_err();
        assert!(matches!(err, Error::BadReply(_)), "{err:?}");
    }
}
