//! A small blocking client: one connection per request, as LAVA's protocol wants.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::frame::{self, FrameError};
use crate::message::{Reply, Request};

/// Replies larger than this are refused (a coordinator never sends them for sane groups).
pub const MAX_REPLY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve coordinator address {0:?}")]
    Resolve(String),
    #[error("cannot connect to coordinator at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connection to coordinator failed: {0}")]
    Io(#[from] io::Error),
    #[error("bad reply frame: {0}")]
    Frame(#[from] FrameError),
    #[error("reply is not a coordinator reply: {0}")]
    BadReply(String),
    #[error("coordinator closed the connection without a reply")]
    NoReply,
}

impl ClientError {
    /// Whether trying again later may succeed (the coordinator is down, restarting or
    /// overloaded), as opposed to a reply that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoReply => true,
            ClientError::Frame(FrameError::Io(_) | FrameError::Truncated { .. }) => true,
            ClientError::Resolve(_) | ClientError::Frame(_) | ClientError::BadReply(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Client {
    /// A client of the coordinator at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Client {
            addr: addr.into(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a reply may take beyond the request's `block`.
    pub fn with_io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let addrs = self
            .addr
            .to_socket_addrs()
            .map_err(|_| ClientError::Resolve(self.addr.clone()))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Connect {
            addr: self.addr.clone(),
            source: last.unwrap_or_else(|| io::Error::other("no address")),
        })
    }

    /// Sends one raw body and returns the raw reply body (`None`: closed without reply).
    pub fn call_raw(&self, body: &str, block: Option<f64>) -> Result<Option<String>, ClientError> {
        let mut stream = self.connect()?;
        stream.set_nodelay(true)?;
        let wait = self.io_timeout + Duration::from_secs_f64(block.unwrap_or(0.0).min(86_400.0));
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(self.io_timeout))?;
        stream.write_all(&frame::encode(body))?;
        // Half-close, as LAVA's client does; some servers wait for it.
        stream.shutdown(Shutdown::Write)?;
        Ok(frame::read_frame(&mut stream, MAX_REPLY)?)
    }

    /// Sends `request` and returns the coordinator's reply.
    pub fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        let body = self
            .call_raw(&request.to_json(), request.block)?
            .ok_or(ClientError::NoReply)?;
        Reply::parse(&body).map_err(|e| ClientError::BadReply(format!("{e}: {body:.200}")))
    }
}
