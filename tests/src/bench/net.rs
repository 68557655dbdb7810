//! A lean blocking client for the load generators: one connection per request, a
//! pre-encoded frame, bounded connect and I/O times, and failures sorted into kinds so that a
//! server's misbehaviour is counted rather than hung on.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lava_protocol::frame::{self, FrameError};
use lava_protocol::{Request, RequestKind, Response};
use serde_json::json;

/// The host name every benchmark request carries (LAVA's coordinator needs one).
pub const HOSTNAME: &str = "lava-bench";

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Read and write, beyond the request's `block`.
    pub io: Duration,
}

/// Why a request got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Connection refused (nothing listening, or the server died).
    Refused,
    /// No connection within the connect timeout (dropped SYNs).
    ConnectTimeout,
    /// Connection reset by the server.
    Reset,
    /// No reply within the I/O timeout.
    Timeout,
    /// Closed without a reply.
    NoReply,
    /// A reply that is not a valid frame or not a coordinator reply.
    BadReply,
    /// `nack`.
    Nack,
    /// Any other I/O error.
    Other,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::NoReply => "no_reply",
            Failure::BadReply => "bad_reply",
            Failure::Nack => "nack",
            Failure::Other => "other_io",
        }
    }

    fn from_io(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::UnexpectedEof => Failure::NoReply,
            _ => Failure::Other,
        }
    }
}

/// Failures by kind.
#[derive(Debug, Default, Clone)]
pub struct Errors(pub BTreeMap<&'static str, u64>);

impl Errors {
    pub fn add(&mut self, f: Failure) {
        *self.0.entry(f.name()).or_default() += 1;
    }

    pub fn add_named(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry(name).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Whether clients shut their write side after the request, as LAVA's client does (off by
/// default). Without it the server closes first, so the TIME_WAIT sockets of the run's
/// hundreds of thousands of connections stay on the server's side of loopback instead of
/// crowding the ephemeral ports of this one client host: with them, connect() slows down
/// until even the floor manages only about 14k connections/s on the test machine.
static HALF_CLOSE: AtomicBool = AtomicBool::new(false);

pub fn set_half_close(on: bool) {
    HALF_CLOSE.store(on, Ordering::Relaxed);
}

pub fn half_close() -> bool {
    HALF_CLOSE.load(Ordering::Relaxed)
}

/// Just the kind of a reply: the client does not build the rest (a 256-node `group_data`
/// carries a map of 256 members), so that the load generator costs little CPU.
#[derive(serde::Deserialize)]
struct Head {
    response: Response,
}

/// Sends one pre-encoded request frame and reads the reply. `sent` runs once the request is
/// written (before the reply is read).
pub fn exchange(
    addr: SocketAddr,
    frame: &[u8],
    block: Option<f64>,
    t: Timeouts,
    sent: Option<&dyn Fn()>,
) -> Result<Response, Failure> {
    let mut stream = match TcpStream::connect_timeout(&addr, t.connect) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            return Err(Failure::ConnectTimeout)
        }
        Err(e) => return Err(Failure::from_io(&e)),
    };
    let io = |e: io::Error| Failure::from_io(&e);
    stream.set_nodelay(true).map_err(io)?;
    let read_for = t.io + Duration::from_secs_f64(block.unwrap_or(0.0));
    stream.set_read_timeout(Some(read_for)).map_err(io)?;
    stream.set_write_timeout(Some(t.io)).map_err(io)?;
    stream.write_all(frame).map_err(io)?;
    if half_close() {
        stream.shutdown(Shutdown::Write).map_err(io)?;
    }
    if let Some(sent) = sent {
        sent();
    }
    let body = match frame::read_frame(&mut stream, 1 << 20) {
        Ok(Some(body)) => body,
        Ok(None) => return Err(Failure::NoReply),
        Err(FrameError::Io(e)) => return Err(Failure::from_io(&e)),
        Err(FrameError::Truncated { .. }) => return Err(Failure::NoReply),
        Err(_) => return Err(Failure::BadReply),
    };
    let head: Head = serde_json::from_str(&body).map_err(|_| Failure::BadReply)?;
    if head.response == Response::Nack {
        return Err(Failure::Nack);
    }
    Ok(head.response)
}

/// A request of the benchmark: every field a LAVA dispatcher would send that matters, and
/// `group_size` always (so that any request may create the group, on both servers).
pub fn request(
    group: &str,
    client: &str,
    size: u32,
    kind: RequestKind,
    block: Option<f64>,
) -> Request {
    let mut r = Request::new(group, client, "node", kind);
    r.group_size = Some(size);
    r.hostname = Some(HOSTNAME.into());
    r.block = block;
    r
}

/// The request's frame, ready to write.
pub fn encode(r: &Request) -> Vec<u8> {
    frame::encode(&r.to_json())
}

pub fn sync_kind(id: &str) -> RequestKind {
    RequestKind::Sync {
        id: id.into(),
        message: json!(null),
    }
}

pub fn send_kind(id: &str, i: u64) -> RequestKind {
    RequestKind::Send {
        id: id.into(),
        message: json!({ "seq": i.to_string() }),
    }
}
