//! The readable table.

use std::fmt::Write;

use super::row::{Row, Section};
use super::servers::Kind;
use super::targets::reference_for;
use super::Report;

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn errors(row: &Row) -> String {
    if row.errors == 0 {
        String::new()
    } else {
        format!(" [{} err]", row.errors)
    }
}

fn error_kinds(row: &Row) -> String {
    let kinds: Vec<String> = row
        .error_kinds
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    kinds.join(", ")
}

fn latency(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// One cell: the figure of one server.
pub fn cell(row: &Row) -> String {
    let figure = match row.section {
        Section::Throughput => format!(
            "{:.0}/s (p99 {} ms)",
            row.value.unwrap_or(0.0),
            latency(row.p99_ms)
        ),
        Section::Rss => row.value.map_or("-".into(), mib),
        Section::RssPerNode => row.value.map_or("-".into(), |v| format!("{v:.0} B")),
        _ if row.samples == 0 && row.error_kinds.contains_key("server_died") => {
            "died, none answered".into()
        }
        _ if row.samples == 0 => "none answered".into(),
        _ => format!("{} / {}", latency(row.median_ms), latency(row.p99_ms)),
    };
    format!("{figure}{}", errors(row))
}

/// A one-line summary for the progress display.
pub fn summary(row: &Row) -> String {
    let what = match row.section {
        Section::Throughput => format!(
            "{:.0} req/s, median {} ms, p99 {} ms",
            row.value.unwrap_or(0.0),
            latency(row.median_ms),
            latency(row.p99_ms)
        ),
        Section::Rss => format!(
            "{} with {} idle groups",
            row.value.map_or("-".into(), mib),
            row.n
        ),
        Section::RssPerNode => format!("{} B per idle node", row.value.map_or(0.0, |v| v.round())),
        _ => format!(
            "median {} ms, p99 {} ms ({} samples)",
            latency(row.median_ms),
            latency(row.p99_ms),
            row.samples
        ),
    };
    format!("{what}, {} errors ({:.1}s)", row.errors, row.seconds)
}

fn label(row: &Row) -> String {
    let mode = |v: &str| match v {
        "block" => "block".to_string(),
        v if v.starts_with("poll") => format!("poll {}", v.trim_start_matches("poll")),
        v => v.to_string(),
    };
    match row.section {
        Section::Sync => format!("sync, {} nodes, {}", row.n, mode(&row.variant)),
        Section::Barrier => format!("start barrier, {} nodes, {}", row.n, mode(&row.variant)),
        Section::Throughput => format!("lava_send, {} clients", row.n),
        Section::Rss if row.n == 0 => "RSS, no idle group".into(),
        Section::Rss => format!("RSS, {} idle groups of 4", row.n),
        Section::RssPerNode => format!("RSS per idle node, {} groups", row.n),
        Section::Wakeup => format!(
            "wake-up of 4 nodes, {} idle groups, {}",
            row.n,
            mode(&row.variant)
        ),
        Section::Tool if row.variant == "lava-sync" => "tool: 2-node lava-sync".into(),
        Section::Tool => format!("tool: one {}", row.variant),
        Section::Console => super::console::label(row),
    }
}

/// "How many times better ours is" than `other`.
fn better(ours: &Row, other: &Row) -> Option<f64> {
    match ours.section {
        Section::Throughput => Some(ours.value? / other.value?),
        Section::Rss | Section::RssPerNode => Some(other.value? / ours.value?),
        _ => Some(other.median_ms? / ours.median_ms?),
    }
}

fn ratio(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_finite() && v >= 10.0 => format!("{v:.0}x"),
        Some(v) if v.is_finite() => format!("{v:.2}x"),
        Some(_) => "-".into(),
    }
}

/// The table: one line per measure, ours / reference / floor side by side.
pub fn table(report: &Report) -> String {
    let rows = &report.rows;
    let mut keys = Vec::new();
    // The console section has a block of its own (median / p90, console against TCP).
    for r in rows.iter().filter(|r| r.section != Section::Console) {
        if !keys.contains(&r.key()) {
            keys.push(r.key());
        }
    }
    let header = [
        "measure".to_string(),
        "ours".into(),
        "ours :memory:".into(),
        "reference".into(),
        "floor".into(),
        "ours vs ref".into(),
        "ours/floor".into(),
    ];
    let mut lines: Vec<[String; 7]> = Vec::new();
    let mut against_poll = false;
    for key in keys {
        let of = |k: Kind| rows.iter().find(|r| r.key() == key && r.server == k);
        let (o, m, r, f) = (
            of(Kind::Ours),
            of(Kind::OursMemory),
            of(Kind::Reference),
            of(Kind::Floor),
        );
        let any = o.or(m).or(r).or(f).expect("a row of this key");
        let mut vs_ref = "-".to_string();
        if let Some(o) = o {
            if let Some(rr) = reference_for(rows, o) {
                vs_ref = ratio(better(o, rr));
                if r.is_none() && vs_ref != "-" {
                    vs_ref.push('*');
                    against_poll = true;
                }
            }
        }
        let vs_floor = match (o, f) {
            (Some(o), Some(f)) => ratio(o.value.zip(f.value).map(|(a, b)| a / b)),
            _ => "-".into(),
        };
        lines.push([
            label(any),
            o.map_or("-".into(), cell),
            m.map_or("-".into(), cell),
            r.map_or("-".into(), cell),
            f.map_or("-".into(), cell),
            vs_ref,
            vs_floor,
        ]);
    }
    let mut widths = header.clone().map(|h| h.len());
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let fmt_line = |out: &mut String, cells: &[String; 7]| {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{c:<w$}");
            } else {
                let _ = write!(line, "  {c:>w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    let m = &report.machine;
    let _ = writeln!(
        out,
        "lava-bench {}: {} CPUs ({}), kernel {}, {:.0}s{}",
        report.version,
        m.nproc,
        m.cpu,
        m.kernel,
        report.seconds,
        if report.quick { ", --quick" } else { "" }
    );
    out.push_str("latency cells: median / p99 in ms; throughput: requests answered per second\n\n");
    if !lines.is_empty() {
        fmt_line(&mut out, &header);
        fmt_line(&mut out, &widths.map(|w| "-".repeat(w)));
        for l in &lines {
            fmt_line(&mut out, l);
        }
        out.push('\n');
    }
    out.push_str("ours vs ref: how many times faster (latency, median), more (throughput) or smaller (memory) ours is.\n");
    if against_poll {
        out.push_str("*: against the reference's polling row (the reference has no `block`).\n");
    }
    out.push_str(&super::console::table(rows));
    out.push_str("\nTargets:\n");
    for t in &report.targets {
        let mark = match t.met {
            Some(true) => "met    ",
            Some(false) => "MISSED ",
            None => "n/a    ",
        };
        let _ = writeln!(out, "  {mark} {}: {}", t.target, t.detail);
    }
    if !report.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &report.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    let failing: Vec<&Row> = rows.iter().filter(|r| r.errors > 0).collect();
    if !failing.is_empty() {
        out.push_str("\nErrors (failed requests are retried as LAVA's client does; gave_up: a node that had no answer within its deadline):\n");
        for r in failing {
            let _ = writeln!(
                out,
                "  - {} ({}): {}",
                label(r),
                r.server.name(),
                error_kinds(r)
            );
        }
    }
    let noted: Vec<&Row> = rows.iter().filter(|r| r.note.is_some()).collect();
    if !noted.is_empty() {
        out.push_str("\nPer-row notes:\n");
        for r in noted {
            let _ = writeln!(
                out,
                "  - {} ({}): {}",
                label(r),
                r.server.name(),
                r.note.as_deref().unwrap_or_default()
            );
        }
    }
    out
}
