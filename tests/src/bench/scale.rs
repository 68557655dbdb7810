//! Memory with many idle groups, and the wake-up latency of one group among them.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lava_protocol::{RequestKind, Response};

use super::net::{self, Errors};
use super::row::{Row, Section};
use super::servers::Process;
use super::sync::group_name;

/// Members of every idle group.
pub const GROUP_SIZE: u32 = 4;

/// Creates groups `from..to` of [`GROUP_SIZE`] members with `threads` clients in parallel:
/// every member asks `group_data` once (the first three get `wait`, the last `group_data`),
/// so each group is complete, registered and then idle: no request held, no message stored.
pub fn create_idle_groups(
    addr: SocketAddr,
    prefix: &str,
    from: u64,
    to: u64,
    threads: u64,
    progress: &super::Progress,
) -> Errors {
    let next = Arc::new(AtomicU64::new(from));
    let made = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, made, prefix) = (next.clone(), made.clone(), prefix.to_owned());
            thread::spawn(move || {
                let mut errors = Errors::default();
                loop {
                    let g = next.fetch_add(1, Ordering::Relaxed);
                    if g >= to {
                        break;
                    }
                    let group = format!("{prefix}-{g}");
                    for m in 0..GROUP_SIZE {
                        let frame = net::encode(&net::request(
                            &group,
                            &format!("n{m}"),
                            GROUP_SIZE,
                            RequestKind::GroupData,
                            None,
                        ));
                        // Bounded retries: a dropped connection is tried again.
                        for _attempt in 0..5 {
                            match net::exchange(addr, &frame, None, super::sync::TIMEOUTS, None) {
                                Ok(r) => {
                                    let want = if m + 1 == GROUP_SIZE {
                                        Response::GroupData
                                    } else {
                                        Response::Wait
                                    };
                                    if r != want {
                                        errors.add_named("unexpected_reply", 1);
                                    }
                                    break;
                                }
                                Err(f) => {
                                    errors.add(f);
                                    thread::sleep(Duration::from_millis(10));
                                }
                            }
                        }
                    }
                    made.fetch_add(1, Ordering::Relaxed);
                }
                errors
            })
        })
        .collect();
    while workers.iter().any(|w| !w.is_finished()) {
        progress.tick(&format!(
            "{} idle groups",
            from + made.load(Ordering::Relaxed)
        ));
        thread::sleep(Duration::from_millis(200));
    }
    let mut errors = Errors::default();
    for w in workers {
        errors.merge(&w.join().expect("group creator"));
    }
    errors
}

/// RSS of `server` once it settled a moment.
fn settled_rss(server: &Process) -> Option<u64> {
    thread::sleep(Duration::from_millis(300));
    server.rss()
}

/// Measures `server`'s RSS empty and with each count of `levels` idle groups (cumulative),
/// and returns the rows: RSS per level, and bytes per idle node over the empty server.
pub fn memory(
    server: &Process,
    levels: &[u64],
    threads: u64,
    progress: &super::Progress,
) -> Vec<Row> {
    let kind = server.kind;
    let prefix = group_name("idle");
    let began = Instant::now();
    // One request first, so that the baseline includes what serving costs at all.
    let mut errors = create_idle_groups(server.addr, &format!("{prefix}-warm"), 0, 1, 1, progress);
    let base = settled_rss(server);
    let mut rows = vec![Row::new(Section::Rss, "idle groups of 4", 0, kind)];
    if let Some(b) = base {
        rows[0] = rows[0].clone().value(b as f64, "bytes");
    }
    let mut made = 0;
    let mut previous: Option<(u64, u64)> = None;
    for &level in levels {
        errors.merge(&create_idle_groups(
            server.addr,
            &prefix,
            made,
            level,
            threads,
            progress,
        ));
        made = level;
        let rss = settled_rss(server);
        let mut row = Row::new(Section::Rss, "idle groups of 4", level, kind)
            .errors(&errors)
            .seconds(began.elapsed().as_secs_f64());
        let mut per = Row::new(Section::RssPerNode, "idle groups of 4", level, kind)
            .errors(&errors)
            .seconds(began.elapsed().as_secs_f64());
        if let (Some(rss), Some(base)) = (rss, base) {
            row = row.value(rss as f64, "bytes");
            let nodes = level * GROUP_SIZE as u64;
            let mut note = format!("(RSS with {level} groups - RSS with 1) / {nodes} nodes");
            if let Some((before, before_rss)) = previous {
                let added = (level - before) * GROUP_SIZE as u64;
                let _ = write!(
                    note,
                    "; from {before} to {level} groups: {:.0} bytes per added node",
                    rss.saturating_sub(before_rss) as f64 / added as f64
                );
            }
            per = per
                .value(rss.saturating_sub(base) as f64 / nodes as f64, "bytes")
                .note(note);
            previous = Some((level, rss));
        }
        rows.push(row);
        rows.push(per);
    }
    rows
}
