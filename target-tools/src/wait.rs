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
    pub start: Instant,
    pub debug: bool,
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
            start: Instant::now(),
            debug,
        })
    }

    fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.start.elapsed())
    }

    fn request(&self, kind: RequestKind, block: Option<Duration>) -> Request {
        let mut req = Request::new(&self.group, &self.client, &self.role, kind);
        req.hostname = Some(self.hostname.clone());
        req.group_size = self.group_size;
        // Milliseconds are plenty, and keep the JSON short.
        req.block = block.map(|b| (b.as_secs_f64() * 1000.0).floor() / 1000.0);
        req
    }

    /// Sends one request and returns its reply (`wait` included); while the coordinator
    /// cannot be reached, tries again with backoff until the timeout. `nack` is an error.
    fn attempt(&self, kind: &RequestKind, block: Option<Duration>) -> Result<Reply, Error> {
        let request = self.request(kind.clone(), block);
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

    /// A request that is answered at once (`lava_send`, `vm_start`, ...); `wait` is an
    /// unexpected reply.
    pub fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        let reply = self.attempt(&kind, None)?;
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
            let reply = self.attempt(&kind, Some(remaining.min(BLOCK_SLICE)))?;
            if !reply.is_wait() {
                return Ok(reply);
            }
            if asked.elapsed() < self.poll {
                std::thread::sleep(self.poll.min(self.remaining()));
            }
        }
    }
}
