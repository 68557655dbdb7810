//! The targets of issue 7 (and issue 2's sync latency), checked against a run's rows.

use serde::Serialize;

use super::row::{Row, Section};
use super::servers::Kind;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
    pub detail: String,
}

fn find<'a>(
    rows: &'a [Row],
    section: Section,
    variant: &str,
    n: u64,
    server: Kind,
) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.section == section && r.variant == variant && r.n == n && r.server == server)
}

/// The reference's row to compare `ours` with: the same measure, or for our `block` rows the
/// reference's polling row (it has no `block`).
pub fn reference_for<'a>(rows: &'a [Row], ours: &Row) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| r.server == Kind::Reference && r.section == ours.section && r.n == ours.n)
        .find(|r| r.variant == ours.variant)
        .or_else(|| {
            rows.iter().find(|r| {
                r.server == Kind::Reference
                    && r.section == ours.section
                    && r.n == ours.n
                    && r.variant.starts_with("poll")
            })
        })
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn latency_below(rows: &[Row], label: &str, variant: &str, n: u64, limit_ms: f64) -> Check {
    let target = format!("{label}: median < {limit_ms} ms");
    match find(rows, Section::Sync, variant, n, Kind::Ours) {
        None => Check {
            target,
            met: None,
            detail: "not measured".into(),
        },
        Some(r) => Check {
            target,
            met: Some(r.median_ms.is_some_and(|m| m < limit_ms) && r.errors == 0),
            detail: format!(
                "median {} ms, p99 {} ms, {} errors",
                fmt(r.median_ms),
                fmt(r.p99_ms),
                r.errors
            ),
        },
    }
}

/// Checks every target that the rows allow.
pub fn check(rows: &[Row]) -> Vec<Check> {
    let mut checks = Vec::new();

    // Every latency row clearly beats the reference (median at most half, p99 not worse),
    // with zero errors.
    let mut compared = 0;
    let mut failing = Vec::new();
    for ours in rows.iter().filter(|r| {
        // Coordination latency; the tools' rows are process wall times, shown apart.
        r.server == Kind::Ours && matches!(r.section, Section::Sync | Section::Barrier)
    }) {
        let Some(reference) = reference_for(rows, ours) else {
            continue;
        };
        compared += 1;
        let clear = match (
            ours.median_ms,
            reference.median_ms,
            ours.p99_ms,
            reference.p99_ms,
        ) {
            (Some(om), Some(rm), Some(op), Some(rp)) => om * 2.0 <= rm && op <= rp,
            (Some(_), None, _, _) => true, // the reference completed no sample at all
            _ => false,
        };
        if !clear || ours.errors > 0 {
            failing.push(format!(
                "{} {} n={} (ours {} ms, {} errors; reference {} ms)",
                ours.section.name(),
                ours.variant,
                ours.n,
                fmt(ours.median_ms),
                ours.errors,
                fmt(reference.median_ms)
            ));
        }
    }
    checks.push(Check {
        target: "every latency row (sync, start barrier) beats the reference clearly (median <= half, p99 not worse), zero errors"
            .into(),
        met: (compared > 0).then_some(failing.is_empty()),
        detail: if failing.is_empty() {
            format!("{compared} rows compared")
        } else {
            format!("missed: {}", failing.join("; "))
        },
    });

    for &c in &[1u64, 8, 64, 512] {
        let ours = find(rows, Section::Throughput, "lava_send", c, Kind::Ours);
        let reference = find(rows, Section::Throughput, "lava_send", c, Kind::Reference);
        let floor = find(rows, Section::Throughput, "lava_send", c, Kind::Floor);
        let memory = find(rows, Section::Throughput, "lava_send", c, Kind::OursMemory);
        let Some(ours) = ours else { continue };
        let o = ours.value.unwrap_or(0.0);
        let r = reference.and_then(|r| r.value);
        let f = floor.and_then(|f| f.value);
        let detail = format!(
            "ours {o:.0} req/s ({} errors), reference {}, floor {}",
            ours.errors,
            r.map_or("-".into(), |r| format!(
                "{r:.0} req/s ({} errors)",
                reference.map_or(0, |x| x.errors)
            )),
            f.map_or("-".into(), |f| format!("{f:.0} req/s")),
        ) + &memory.and_then(|m| m.value).map_or(String::new(), |m| {
            format!("; ours with --state :memory: {m:.0} req/s")
        });
        if c >= 64 {
            checks.push(Check {
                target: format!(
                    "throughput, {c} clients: clearly above the reference (>= 1.2x), zero errors"
                ),
                met: r.map(|r| o >= 1.2 * r && ours.errors == 0),
                detail,
            });
        } else {
            checks.push(Check {
                target: format!(
                    "throughput, {c} client(s): not below the reference beyond noise (>= 0.9x) and within 1.5x of the floor"
                ),
                met: match (r, f) {
                    (Some(r), Some(f)) => Some(o >= 0.9 * r && o * 1.5 >= f && ours.errors == 0),
                    (None, Some(f)) => Some(o * 1.5 >= f && ours.errors == 0),
                    _ => None,
                },
                detail,
            });
        }
    }

    checks.push(latency_below(
        rows,
        "16-node sync with block (issues 2 and 7)",
        "block",
        16,
        5.0,
    ));
    checks.push(latency_below(
        rows,
        "16-node sync polling every 10 ms (issue 2)",
        "poll10ms",
        16,
        20.0,
    ));
    checks.push(latency_below(
        rows,
        "256-node sync with block",
        "block",
        256,
        50.0,
    ));

    let per_node = rows
        .iter()
        .filter(|r| r.section == Section::RssPerNode && r.server == Kind::Ours)
        .max_by_key(|r| r.n);
    checks.push(match per_node {
        None => Check {
            target: "memory: under 2 KiB per idle node".into(),
            met: None,
            detail: "not measured".into(),
        },
        Some(r) => Check {
            target: "memory: under 2 KiB per idle node".into(),
            met: r.value.map(|v| v < 2048.0),
            detail: format!(
                "{} bytes per node with {} idle groups of 4",
                r.value.map_or("-".into(), |v| format!("{v:.0}")),
                r.n
            ),
        },
    });
    checks
}
