//! The LAVA MultiNode coordinator protocol.
//!
//! One request per TCP connection: the client writes a frame (eight upper-case hex digits
//! giving the body length, then a UTF-8 JSON body), shuts its write side and reads one frame
//! back. This crate holds the framing ([`frame`]), the JSON encoding LAVA's Python peers
//! produce ([`json`]), the typed requests and replies ([`message`]) and a small blocking
//! client ([`client`]). It uses std only, so the target tools that link it stay small.

pub mod client;
pub mod console;
pub mod frame;
pub mod json;
pub mod message;
pub mod timeline;

pub use client::{Client, ClientError};
pub use frame::FrameError;
pub use message::{
    LockScope, OperatorAction, Parties, Reply, Request, RequestError, RequestKind, Response,
};

/// The coordinator's well-known TCP port (LAVA's default).
pub const DEFAULT_PORT: u16 = 3079;

/// Message id of the VM start gate: the host sends it with `host_ip`.
pub const VM_START_ID: &str = "lava_vm_start";
/// Message id of a VM's (or the host's) end, with `status` and `reason`.
pub const VM_STOP_ID: &str = "lava_vm_stop";
