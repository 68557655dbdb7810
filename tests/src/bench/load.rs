//! Request throughput: C concurrent clients, each sending `lava_send` on a new connection
//! as soon as the previous one is answered, for a fixed window.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use lava_protocol::Response;

use super::net::{self, Errors, Timeouts};
use super::row::{Row, Section};
use super::servers::Kind;
use super::stats::{self, ms};
use super::sync::group_name;

/// A `lava_send` is answered at once: a reply that takes seconds is a failure of the server
/// (the reference's accept queue of one), counted rather than waited for.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    io: Duration::from_secs(2),
};

/// One window of load against one server.
pub struct Window {
    pub ok: u64,
    pub latencies: Vec<f64>,
    pub errors: Errors,
    pub rate: f64,
    pub seconds: f64,
}

/// `clients` threads send `lava_send` (each its own client of one group of `clients`
/// members, replacing its own data) during `warmup + window`; requests answered `ack` within
/// the window count. Errors count over the whole run.
pub fn window(addr: SocketAddr, clients: usize, warmup: Duration, window: Duration) -> Window {
    let group = group_name("load");
    let go = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (go, group) = (go.clone(), group.clone());
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let client = format!("client{i}");
                    let mut errors = Errors::default();
                    let mut latencies = Vec::new();
                    let mut seq = 0u64;
                    go.wait();
                    let begin = Instant::now() + warmup;
                    let end = begin + window;
                    let mut ok = 0u64;
                    while Instant::now() < end {
                        seq += 1;
                        let frame = net::encode(&net::request(
                            &group,
                            &client,
                            clients as u32,
                            net::send_kind("bench", seq),
                            None,
                        ));
                        let t = Instant::now();
                        let result = net::exchange(addr, &frame, None, TIMEOUTS, None);
                        let done = Instant::now();
                        match result {
                            Ok(Response::Ack) => {
                                if done >= begin && done <= end {
                                    ok += 1;
                                    latencies.push(ms(done - t));
                                }
                            }
                            Ok(_) => errors.add_named("not_ack", 1),
                            Err(f) => {
                                errors.add(f);
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    (ok, latencies, errors)
                })
                .expect("spawn a client thread")
        })
        .collect();
    let began = Instant::now();
    go.wait();
    let mut ok = 0;
    let mut latencies = Vec::new();
    let mut errors = Errors::default();
    for t in threads {
        let (n, l, e) = t.join().expect("client thread");
        ok += n;
        latencies.extend(l);
        errors.merge(&e);
    }
    Window {
        ok,
        latencies,
        errors,
        rate: ok as f64 / window.as_secs_f64(),
        seconds: began.elapsed().as_secs_f64(),
    }
}

/// The row of several windows against one server: the median window's rate; latencies and
/// errors of all windows.
pub fn row(server: Kind, clients: usize, windows: &[Window]) -> Row {
    let rates: Vec<f64> = windows.iter().map(|w| w.rate).collect();
    let mut latencies = Vec::new();
    let mut errors = Errors::default();
    for w in windows {
        latencies.extend_from_slice(&w.latencies);
        errors.merge(&w.errors);
    }
    let mut row = Row::new(Section::Throughput, "lava_send", clients as u64, server)
        .latencies(&latencies)
        .errors(&errors)
        .value(stats::median(&rates).unwrap_or(0.0), "req/s")
        .seconds(windows.iter().map(|w| w.seconds).sum());
    row.samples = windows.iter().map(|w| w.ok).sum();
    row.runs = rates;
    row
}
