//! LAVA MultiNode coordinator: the coordination rules ([`state`], a pure state machine), the
//! configuration ([`config`]) and the thin tokio server around them ([`server`]).

pub mod access;
pub mod config;
pub mod diagnose;
pub mod history;
pub mod metrics;
pub mod operator;
pub mod server;
pub mod state;
pub mod status;
pub mod store;
pub mod web;
pub mod writer;
