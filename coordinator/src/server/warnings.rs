//! Rate-limited warnings: a flood of bad connections must not flood the log. Each kind of
//! warning (bad frame, refused, over a limit, ...) is logged at most [`PER_WINDOW`] times per
//! [`WINDOW`]; what is left out is counted and reported in one line when its window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of a window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind logged per window.
pub const PER_WINDOW: u32 = 10;
/// Lines per window of the INFO lines of `nack` replies (kind `nack`): most are answers to
/// real events (a member failed, a limit reached by a job) that operators read.
pub const NACKS_PER_WINDOW: u32 = 100;

fn budget(kind: &str) -> u32 {
    match kind {
        "nack" => NACKS_PER_WINDOW,
        _ => PER_WINDOW,
    }
}

struct Window {
    start: Instant,
    shown: u32,
    suppressed: u64,
}

/// Counts warnings by kind. A std `Mutex`, held for a map look-up only.
#[derive(Default)]
pub struct Warnings {
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl Warnings {
    /// Whether a warning of `kind` may be logged now; `false`: it is counted as suppressed.
    /// A window that ended with suppressed lines is first reported through `report`.
    pub fn allow(&self, kind: &'static str, now: Instant, report: impl FnOnce(&str, u64)) -> bool {
        let mut ended = None;
        let allowed = {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let window = windows.entry(kind).or_insert(Window {
                start: now,
                shown: 0,
                suppressed: 0,
            });
            if now.saturating_duration_since(window.start) >= WINDOW {
                if window.suppressed > 0 {
                    ended = Some(window.suppressed);
                }
                *window = Window {
                    start: now,
                    shown: 0,
                    suppressed: 0,
                };
            }
            if window.shown < budget(kind) {
                window.shown += 1;
                true
            } else {
                window.suppressed += 1;
                false
            }
        };
        if let Some(count) = ended {
            report(kind, count);
        }
        allowed
    }

    /// The windows that ended with suppressed lines, reset: `(kind, count)` to report. Called
    /// once a second, so that the count of a flood that stopped is reported too.
    pub fn ended(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        windows.retain(|kind, window| {
            if now.saturating_duration_since(window.start) < WINDOW {
                return true;
            }
            if window.suppressed > 0 {
                out.push((*kind, window.suppressed));
            }
            false
        });
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_window_then_one_count() {
        let w = Warnings::default();
        let t0 = Instant::now();
        let mut reported = Vec::new();
        let shown = (0..100)
            .filter(|_| w.allow("bad_frame", t0, |k, n| reported.push((k.to_owned(), n))))
            .count();
        assert_eq!(shown, PER_WINDOW as usize);
        // Another kind has its own window.
        assert!(w.allow("refused", t0, |_, _| {}));
        assert!(w.ended(t0 + Duration::from_secs(1)).is_empty());
        // The next warning after the window reports the count first.
        let later = t0 + WINDOW;
        assert!(w.allow("bad_frame", later, |k, n| reported.push((k.to_owned(), n))));
        assert_eq!(reported, vec![("bad_frame".to_owned(), 90)]);
        // A flood that stopped is reported by the tick.
        for _ in 0..15 {
            w.allow("bad_frame", later, |_, _| {});
        }
        assert_eq!(w.ended(later + WINDOW), vec![("bad_frame", 6)]);
        assert!(w.ended(later + WINDOW * 2).is_empty());
    }
}
