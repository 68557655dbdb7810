//! Counters for `status` and Prometheus metrics (text format) on an optional HTTP address.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lava_protocol::{RequestKind, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::server::Shared;

const RESPONSES: [(Response, &str); 5] = [
    (Response::Wait, "wait"),
    (Response::Ack, "ack"),
    (Response::Nack, "nack"),
    (Response::GroupData, "group_data"),
    (Response::Roster, "roster"),
];

/// What went wrong with a connection or request before the state machine saw it.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Not a frame: bad header, too large, truncated, not UTF-8, bytes after it.
    BadFrame,
    /// A frame whose body is not a valid request.
    BadRequest,
    /// No whole request within `read_timeout`.
    ReadTimeout,
    /// Refused by the access rules.
    Refused,
    /// Refused or cut short by a connection limit: `max_connections_per_address`, or a body
    /// that could not get room under `max_inflight_bytes` within `read_timeout`.
    OverLimit,
}

const FAILURES: [(Failure, &str); 5] = [
    (Failure::BadFrame, "bad_frame"),
    (Failure::BadRequest, "bad_request"),
    (Failure::ReadTimeout, "read_timeout"),
    (Failure::Refused, "refused"),
    (Failure::OverLimit, "over_limit"),
];

/// Upper bounds of the wake-up latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; RESPONSES.len()]; RequestKind::NAMES.len()],
    failures: [AtomicU64; FAILURES.len()],
    /// Connections being served now.
    pub connections: AtomicU64,
    wakeup_buckets: [AtomicU64; BUCKETS.len()],
    wakeup_count: AtomicU64,
    wakeup_sum_micros: AtomicU64,
}

/// Values that live in the state, read when the metrics are rendered.
pub struct Gauges {
    pub groups: usize,
    pub clients: usize,
    pub blocked: usize,
    pub stored_bytes: usize,
    /// Ages of the blocked requests, seconds.
    pub blocked_ages: Vec<f64>,
}

fn response_index(response: Response) -> usize {
    RESPONSES
        .iter()
        .position(|(r, _)| *r == response)
        .unwrap_or(0)
}

impl Metrics {
    pub fn request(&self, kind: &RequestKind, response: Response) {
        self.requests[kind.index()][response_index(response)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failure(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A held request was released `latency` after the change that released it.
    pub fn wakeup(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.wakeup_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.wakeup_count.fetch_add(1, Ordering::Relaxed);
        self.wakeup_sum_micros.fetch_add(
            latency.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Requests answered, in all.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests answered `nack` by the state machine.
    pub fn nacks_total(&self) -> u64 {
        let nack = response_index(Response::Nack);
        self.requests
            .iter()
            .map(|r| r[nack].load(Ordering::Relaxed))
            .sum()
    }

    pub fn failures_of(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP lava_coordinator_requests_total Requests answered, by request kind and reply.\n");
        out.push_str("# TYPE lava_coordinator_requests_total counter\n");
        for (kind, row) in RequestKind::NAMES.iter().zip(&self.requests) {
            for ((_, response), count) in RESPONSES.iter().zip(row) {
                let n = load(count);
                if n > 0 {
                    let _ = writeln!(out, "lava_coordinator_requests_total{{request=\"{kind}\",response=\"{response}\"}} {n}");
                }
            }
        }
        out.push_str("# HELP lava_coordinator_errors_total Connections or requests that failed before the coordination rules, by kind.\n");
        out.push_str("# TYPE lava_coordinator_errors_total counter\n");
        for ((_, name), count) in FAILURES.iter().zip(&self.failures) {
            let _ = writeln!(
                out,
                "lava_coordinator_errors_total{{kind=\"{name}\"}} {}",
                load(count)
            );
        }
        for (name, help, value) in [
            ("groups", "Groups in the coordinator.", g.groups as u64),
            (
                "clients",
                "Registered members of all groups.",
                g.clients as u64,
            ),
            (
                "blocked_requests",
                "Requests held until their condition holds.",
                g.blocked as u64,
            ),
            (
                "stored_bytes",
                "Bytes of message data stored.",
                g.stored_bytes as u64,
            ),
            (
                "connections",
                "Connections being served.",
                load(&self.connections),
            ),
        ] {
            let _ = writeln!(out, "# HELP lava_coordinator_{name} {help}\n# TYPE lava_coordinator_{name} gauge\nlava_coordinator_{name} {value}");
        }
        out.push_str("# HELP lava_coordinator_blocked_requests_by_age Held requests blocked at least this long (seconds).\n");
        out.push_str("# TYPE lava_coordinator_blocked_requests_by_age gauge\n");
        for age in [0.0, 1.0, 10.0, 60.0, 600.0] {
            let n = g.blocked_ages.iter().filter(|a| **a >= age).count();
            let _ = writeln!(
                out,
                "lava_coordinator_blocked_requests_by_age{{older_than=\"{age}\"}} {n}"
            );
        }
        out.push_str("# HELP lava_coordinator_wakeup_seconds Time from the change that released a held request to its reply.\n");
        out.push_str("# TYPE lava_coordinator_wakeup_seconds histogram\n");
        for (bound, count) in BUCKETS.iter().zip(&self.wakeup_buckets) {
            let _ = writeln!(
                out,
                "lava_coordinator_wakeup_seconds_bucket{{le=\"{bound}\"}} {}",
                load(count)
            );
        }
        let count = load(&self.wakeup_count);
        let _ = writeln!(
            out,
            "lava_coordinator_wakeup_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "lava_coordinator_wakeup_seconds_sum {}",
            load(&self.wakeup_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "lava_coordinator_wakeup_seconds_count {count}");
        out
    }
}

/// Scrapes served at once; more wait to be accepted (a scraper needs one).
const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (HTTP/1.0 style: one request per connection) until shutdown, through
/// the server's accept loop: bounded in connections, and counted against
/// `max_connections_per_address` with the address's protocol connections.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    crate::server::accept(
        &listener,
        &shared,
        &slots,
        &shutdown,
        crate::server::refuse_http,
        |stream, peer| answer(shared.clone(), stream, peer),
    )
    .await;
}

async fn answer(
    shared: Arc<Shared>,
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return debug!("metrics: {peer} sent no request in time");
    }
    let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let body = shared.metrics_text();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "only GET /metrics is served here\n";
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use lava_protocol::LockScope;

    /// Every kind has its own counter (an unknown one would be counted as `group_data`).
    #[test]
    fn every_request_kind_has_a_counter() {
        let kinds = [
            RequestKind::Fail { reason: "r".into() },
            RequestKind::WaitAny {
                ids: vec!["a".into()],
                role: None,
            },
            RequestKind::Lock {
                name: "l".into(),
                count: 1,
                scope: LockScope::Group,
            },
            RequestKind::Unlock {
                name: "l".into(),
                scope: LockScope::Lab,
            },
        ];
        let metrics = Metrics::default();
        for kind in &kinds {
            metrics.request(kind, Response::Ack);
        }
        let text = metrics.render(&Gauges {
            groups: 0,
            clients: 0,
            blocked: 0,
            stored_bytes: 0,
            blocked_ages: Vec::new(),
        });
        // Each kind is counted under its own name, once.
        for kind in &kinds {
            let line = format!(
                "lava_coordinator_requests_total{{request=\"{}\",response=\"ack\"}} 1",
                kind.name()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }
}
