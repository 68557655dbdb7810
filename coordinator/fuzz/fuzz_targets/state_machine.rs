//! Sequences of arbitrary requests (each input line is one request body) from a handful of
//! clients into the coordination state machine: it must never panic, and its bookkeeping must
//! stay consistent (every parked request accounted for, every cancel answered once).
#![no_main]

use std::time::{Duration, Instant};

use lava_coordinator::state::{Coordinator, Limits};
use lava_protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let limits = Limits {
        max_groups: 4,
        max_group_size: 8,
        max_ids_per_group: 8,
        max_group_bytes: 4096,
        max_total_bytes: 8192,
    };
    let mut machine = Coordinator::new(Duration::from_secs(60)).with_limits(limits);
    let t0 = Instant::now();
    let mut parked = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Ok(request) = Request::parse(line) else { continue };
        let now = t0 + Duration::from_secs(i as u64);
        let out = machine.handle(&request, now, (i % 2 == 0).then_some(i as u64));
        if out.reply.is_none() {
            parked.push(i as u64);
        }
        for wakeup in out.wakeups {
            parked.retain(|w| *w != wakeup.waiter);
        }
        let _ = machine.take_mutations();
        if i % 7 == 6 {
            if let Some(w) = parked.pop() {
                assert!(machine.cancel(w), "a parked request can be cancelled");
            }
        }
        let _ = machine.expire(now);
        let _ = machine.status(None, now);
    }
    let _ = machine.expire(t0 + Duration::from_secs(1_000_000));
});
