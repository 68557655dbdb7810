//! One measured figure: what was measured, on which server, and the result.

use std::collections::BTreeMap;

use serde::Serialize;

use super::net::Errors;
use super::servers::Kind;
use super::stats;

/// The sections of the benchmark, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// `lava_sync` latency of N nodes, per node and round.
    Sync,
    /// Time from the last node's `group_data` to every node released.
    Barrier,
    /// `lava_send` requests per second with C concurrent clients.
    Throughput,
    /// Resident memory with idle groups.
    Rss,
    /// Resident memory per idle node.
    RssPerNode,
    /// Sync latency of one group of 4 while many groups are idle.
    Wakeup,
    /// Wall time of the target tools.
    Tool,
    /// The MultiNode API over a VM's console (the launcher's relay) next to TCP.
    Console,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Sync => "sync",
            Section::Barrier => "barrier",
            Section::Throughput => "throughput",
            Section::Rss => "rss",
            Section::RssPerNode => "rss_per_node",
            Section::Wakeup => "wakeup",
            Section::Tool => "tool",
            Section::Console => "console",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: Section,
    /// `poll10ms`, `block`, `lava-send`, ... (empty when there is one way).
    pub variant: String,
    /// Nodes, clients or idle groups.
    pub n: u64,
    pub server: Kind,
    /// Latency in milliseconds: per node and round (sync, wakeup), per repetition (barrier,
    /// tool), per request (throughput).
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Set by the rows that report it (the console section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Throughput (req/s) or memory (bytes).
    pub value: Option<f64>,
    pub value_unit: Option<&'static str>,
    /// The value of each repetition (throughput windows), when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
    /// Latency samples (or requests, for throughput).
    pub samples: u64,
    /// Failed requests and abandoned rounds, total and by kind.
    pub errors: u64,
    pub error_kinds: BTreeMap<&'static str, u64>,
    /// Wall time of this measurement, seconds.
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Row {
    pub fn new(section: Section, variant: &str, n: u64, server: Kind) -> Row {
        Row {
            section,
            variant: variant.to_owned(),
            n,
            server,
            median_ms: None,
            p99_ms: None,
            p90_ms: None,
            max_ms: None,
            runs: Vec::new(),
            value: None,
            value_unit: None,
            samples: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            seconds: 0.0,
            note: None,
        }
    }

    /// Sets median, p99 and the sample count from latencies in milliseconds.
    pub fn latencies(mut self, ms: &[f64]) -> Row {
        self.median_ms = stats::median(ms);
        self.p99_ms = stats::p99(ms);
        self.max_ms = stats::percentile(ms, 100.0);
        self.samples = ms.len() as u64;
        self
    }

    /// `latencies`, and the p90 too.
    pub fn latencies_p90(mut self, ms: &[f64]) -> Row {
        self.p90_ms = stats::percentile(ms, 90.0);
        self.latencies(ms)
    }

    pub fn errors(mut self, errors: &Errors) -> Row {
        self.errors = errors.total();
        self.error_kinds = errors.0.clone();
        self
    }

    pub fn value(mut self, value: f64, unit: &'static str) -> Row {
        self.value = Some(value);
        self.value_unit = Some(unit);
        self
    }

    pub fn seconds(mut self, s: f64) -> Row {
        self.seconds = s;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    /// What is measured, without the server: rows of different servers with the same key
    /// are compared.
    pub fn key(&self) -> (Section, String, u64) {
        (self.section, self.variant.clone(), self.n)
    }
}
