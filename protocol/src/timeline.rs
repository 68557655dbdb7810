//! A group's history as the coordinator reports it (the `history` of a `status` reply for
//! one group) and its picture: a timeline with one lane per member, drawn as SVG text.
//!
//! The coordinator's web view and the VM-group launcher's `report.html` draw the same
//! picture from the same events, so both live here, beside the wire format they come in.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One thing that happened in a group, at `at_ms` (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Numbers the events upwards (not necessarily from 1, nor without gaps across a restart).
    pub seq: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// The group was created for `size` members.
    Created { size: usize },
    /// A member's first request.
    Registered { client: String, role: String },
    /// Every member has registered.
    Complete,
    /// A request, from its first asking to its answer (a polling client's repeated asks
    /// of the same call are one request).
    Request(Span),
    /// A sync round completed: every member arrived.
    SyncComplete { id: String },
    /// A member declared it failed (or its lease expired).
    Failed { client: String, reason: String },
    /// The coordinator answered a deadlocked group.
    Verdict { text: String },
    /// The lab's operator acted on the group (`lava-coordinator unblock`, `fail`, `send`).
    Operator { operator: String, what: String },
    /// Every member cleared the group; its state is gone.
    Cleared,
    /// The group was forgotten after its idle time.
    Expired,
}

/// A request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub client: String,
    /// The request's name on the wire (`lava_sync`, `lava_send`, ...).
    pub kind: String,
    /// Its message or sync id; empty when it has none.
    #[serde(default)]
    pub id: String,
    /// When it was answered; `None` while it waits.
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// The final answer (`ack`, `nack`, `group_data`, ...); `None` while it waits.
    #[serde(default)]
    pub response: Option<String>,
    /// A `nack`'s reason, or what a wait was for.
    #[serde(default)]
    pub detail: Option<String>,
    /// Whether the coordinator held the connection open for it (else it polled).
    #[serde(default)]
    pub held: bool,
    /// How many times it was asked (a polling client asks again after each `wait`).
    #[serde(default = "one")]
    pub asks: u32,
}

fn one() -> u32 {
    1
}

/// A group's history: its events, oldest first, and how many older ones were dropped to
/// keep within the coordinator's bounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub group: String,
    pub dropped: u64,
    /// The group's state is gone (cleared or expired); the history is what is left.
    #[serde(default)]
    pub ended: bool,
    pub events: Vec<Entry>,
}

/// Requests that may wait are drawn as bars, the others as marks (`vm_boot` and `vm_test`:
/// a VM's boot and run in the VM-group launcher's own record).
fn may_wait(kind: &str) -> bool {
    matches!(
        kind,
        "vm_boot"
            | "vm_test"
            | "lava_wait"
            | "lava_wait_all"
            | "lava_sync"
            | "group_data"
            | "roster"
            | "vm_wait_start"
            | "vm_wait_all"
            | "wait_any"
            | "lock"
    )
}

/// A request drawn from its asking to its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub lane: usize,
    pub seq: u64,
    pub start_ms: u64,
    /// The answer's time, or the picture's end while it waits.
    pub end_ms: u64,
    pub waiting: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Registered,
    Send,
    Other,
    Failed,
}

/// Something that happened at one time in one member's lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub lane: usize,
    pub seq: u64,
    pub at_ms: u64,
    pub kind: MarkKind,
    pub label: String,
    /// The request's name and id, for a request.
    pub call: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Sync,
    Verdict,
    Group,
}

/// Something that happened to the whole group: a line across every lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: LineKind,
    pub label: String,
}

/// What the picture shows: lanes, bars, marks and lines over `start_ms..end_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Where the "now" line is drawn, for a live group.
    pub now_ms: Option<u64>,
    /// Member names, one lane each, in the order they registered.
    pub lanes: Vec<String>,
    pub bars: Vec<Bar>,
    pub marks: Vec<Mark>,
    pub lines: Vec<Line>,
    pub dropped: u64,
}

impl Timeline {
    /// The picture of `log`, with a lane for each of `members` (and for anybody else seen in
    /// it). `now_ms`: the group is live and the picture runs until then; waiting requests
    /// are drawn up to it.
    pub fn build(log: &Log, members: &[String], now_ms: Option<u64>) -> Timeline {
        let mut lanes: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut lane_of = |client: &str, lanes: &mut Vec<String>| -> usize {
            if let Some(&i) = index.get(client) {
                return i;
            }
            lanes.push(client.to_owned());
            index.insert(client.to_owned(), lanes.len() - 1);
            lanes.len() - 1
        };
        for e in &log.events {
            if let What::Registered { client, .. } = &e.what {
                lane_of(client, &mut lanes);
            }
        }
        for m in members {
            lane_of(m, &mut lanes);
        }
        let first = log.events.first().map_or(0, |e| e.at_ms);
        let last = log
            .events
            .iter()
            .map(|e| match &e.what {
                What::Request(s) => s.end_ms.unwrap_or(e.at_ms).max(e.at_ms),
                _ => e.at_ms,
            })
            .max()
            .unwrap_or(first);
        let end_ms = now_ms.unwrap_or(last).max(last);
        let mut t = Timeline {
            start_ms: first.min(end_ms),
            end_ms,
            now_ms,
            lanes: Vec::new(),
            bars: Vec::new(),
            marks: Vec::new(),
            lines: Vec::new(),
            dropped: log.dropped,
        };
        for e in &log.events {
            let line = |kind, label: String| Line {
                seq: e.seq,
                at_ms: e.at_ms,
                kind,
                label,
            };
            match &e.what {
                What::Registered { client, role } => t.marks.push(Mark {
                    lane: lane_of(client, &mut lanes),
                    seq: e.seq,
                    at_ms: e.at_ms,
                    kind: MarkKind::Registered,
                    label: format!("registered as {role}"),
                    call: None,
                }),
                What::Request(span) => {
                    let lane = lane_of(&span.client, &mut lanes);
                    if may_wait(&span.kind) {
                        t.bars.push(Bar {
                            lane,
                            seq: e.seq,
                            start_ms: e.at_ms,
                            end_ms: span.end_ms.unwrap_or(end_ms).max(e.at_ms),
                            waiting: span.end_ms.is_none(),
                            span: span.clone(),
                        });
                    } else {
                        let kind = match span.kind.as_str() {
                            "lava_send" | "vm_start" | "vm_stop" => MarkKind::Send,
                            _ => MarkKind::Other,
                        };
                        t.marks.push(Mark {
                            lane,
                            seq: e.seq,
                            at_ms: e.at_ms,
                            kind,
                            label: describe(span),
                            call: Some((span.kind.clone(), span.id.clone())),
                        });
                    }
                }
                What::Failed { client, reason } => t.marks.push(Mark {
                    lane: lane_of(client, &mut lanes),
                    seq: e.seq,
                    at_ms: e.at_ms,
                    kind: MarkKind::Failed,
                    label: format!("failed: {reason}"),
                    call: None,
                }),
                What::SyncComplete { id } => t
                    .lines
                    .push(line(LineKind::Sync, format!("sync {id:?} complete"))),
                What::Verdict { text } => t.lines.push(line(LineKind::Verdict, text.clone())),
                What::Operator { operator, what } => t.lines.push(line(
                    LineKind::Verdict,
                    format!("operator {operator}: {what}"),
                )),
                What::Created { size } => t
                    .lines
                    .push(line(LineKind::Group, format!("group created for {size}"))),
                What::Complete => t
                    .lines
                    .push(line(LineKind::Group, "every member registered".into())),
                What::Cleared => t.lines.push(line(LineKind::Group, "cleared".into())),
                What::Expired => t.lines.push(line(LineKind::Group, "expired".into())),
            }
        }
        t.lanes = lanes;
        t
    }

    /// The picture as an inline SVG element (no script, no external resource): hovering a
    /// bar or mark shows its `<title>`, and each carries `data-seq` for a page's script.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 960.0;
        const LABELS: f64 = 150.0;
        const LANE: f64 = 28.0;
        const TOP: f64 = 34.0;
        let span_ms = (self.end_ms.saturating_sub(self.start_ms)).max(1000) as f64;
        let plot = WIDTH - LABELS - 16.0;
        let x = |ms: u64| LABELS + (ms.saturating_sub(self.start_ms) as f64) * plot / span_ms;
        let height = TOP + LANE * self.lanes.len().max(1) as f64 + 8.0;
        let bottom = height - 8.0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="timeline of {} members">"#,
            self.lanes.len()
        );
        s.push_str(concat!(
            "<style>.timeline text{font:11px sans-serif;fill:#333}",
            ".timeline .lane{fill:#f4f5f7}.timeline .bar{fill:#4c8bf5}",
            ".timeline .bar.held{fill:#f5a623}.timeline .bar.nack{fill:#d0021b}",
            ".timeline .bar.polled{fill:#7fb0ff}.timeline .bar.held.polled{fill:#f5c26b}",
            ".timeline .send{fill:#2e7d32}.timeline .reg{fill:#777}.timeline .other{fill:#555}",
            ".timeline .fail{stroke:#d0021b;stroke-width:3}",
            ".timeline .sync{stroke:#2e7d32;stroke-dasharray:4 3}",
            ".timeline .verdict{stroke:#d0021b;stroke-width:2}",
            ".timeline .group{stroke:#999;stroke-dasharray:1 3}",
            ".timeline .now{stroke:#000;stroke-width:1.5}",
            ".timeline [data-seq]{cursor:pointer}</style>"
        ));
        // Time axis: about six ticks, relative to the start.
        let step = tick_step(span_ms as u64);
        let mut tick = 0;
        while tick <= span_ms as u64 {
            let tx = x(self.start_ms + tick);
            let _ = write!(
                s,
                r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="#e0e0e0"/><text x="{tx:.1}" y="{}" text-anchor="middle">+{}</text>"##,
                TOP - 6.0,
                TOP - 10.0,
                duration_text(tick)
            );
            tick += step;
        }
        for (i, name) in self.lanes.iter().enumerate() {
            let y = TOP + LANE * i as f64;
            let _ = write!(
                s,
                r#"<g class="lane-row" data-lane="{}"><rect class="lane" x="0" y="{y}" width="{WIDTH}" height="{}"/><text x="6" y="{}">{}</text></g>"#,
                escape(name),
                LANE - 2.0,
                y + LANE / 2.0 + 4.0,
                escape(&shorten(name, 22))
            );
        }
        for b in &self.bars {
            let y = TOP + LANE * b.lane as f64 + 5.0;
            let (x0, x1) = (x(b.start_ms), x(b.end_ms));
            let mut class = String::from("bar");
            if b.span.held {
                class.push_str(" held");
            }
            if b.span.asks > 1 {
                class.push_str(" polled");
            }
            if b.span.response.as_deref() == Some("nack") {
                class.push_str(" nack");
            }
            if b.waiting {
                class.push_str(" waiting");
            }
            let _ = write!(
                s,
                r#"<rect class="{class}" data-seq="{}" data-kind="{}" data-id="{}" data-client="{}" x="{x0:.1}" y="{y}" width="{:.1}" height="{}" rx="3"><title>{}</title></rect>"#,
                b.seq,
                escape(&b.span.kind),
                escape(&b.span.id),
                escape(&b.span.client),
                (x1 - x0).max(3.0),
                LANE - 12.0,
                escape(&bar_title(b))
            );
        }
        for m in &self.marks {
            let y = TOP + LANE * m.lane as f64 + LANE / 2.0 - 1.0;
            let mx = x(m.at_ms);
            let title = escape(&format!(
                "{} at +{}: {}",
                self.lanes.get(m.lane).map_or("", String::as_str),
                duration_text(m.at_ms.saturating_sub(self.start_ms)),
                m.label
            ));
            let _ = match m.kind {
                MarkKind::Failed => write!(
                    s,
                    r#"<path class="fail" data-seq="{}" d="M{:.1} {:.1}l10 10m0 -10l-10 10"><title>{title}</title></path>"#,
                    m.seq,
                    mx - 5.0,
                    y - 5.0
                ),
                kind => write!(
                    s,
                    r#"<path class="{}" data-seq="{}"{} d="M{mx:.1} {:.1}l6 6l-6 6l-6 -6z"><title>{title}</title></path>"#,
                    match kind {
                        MarkKind::Send => "send",
                        MarkKind::Registered => "reg",
                        _ => "other",
                    },
                    m.seq,
                    match &m.call {
                        Some((kind, id)) =>
                            format!(r#" data-kind="{}" data-id="{}""#, escape(kind), escape(id)),
                        None => String::new(),
                    },
                    y - 6.0
                ),
            };
        }
        for l in &self.lines {
            let lx = x(l.at_ms);
            let _ = write!(
                s,
                r#"<line class="{}" data-seq="{}" x1="{lx:.1}" y1="{}" x2="{lx:.1}" y2="{bottom}"><title>{} at +{}</title></line>"#,
                match l.kind {
                    LineKind::Sync => "sync",
                    LineKind::Verdict => "verdict",
                    LineKind::Group => "group",
                },
                l.seq,
                TOP - 4.0,
                escape(&l.label),
                duration_text(l.at_ms.saturating_sub(self.start_ms))
            );
        }
        if let Some(now) = self.now_ms {
            let nx = x(now);
            let _ = write!(
                s,
                r#"<line class="now" x1="{nx:.1}" y1="{}" x2="{nx:.1}" y2="{bottom}"><title>now</title></line>"#,
                TOP - 4.0
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// One line saying what a request was and how it was answered.
pub fn describe(span: &Span) -> String {
    let mut out = span.kind.clone();
    if !span.id.is_empty() {
        let _ = write!(out, " {:?}", span.id);
    }
    match &span.response {
        Some(r) => {
            let _ = write!(out, " -> {r}");
        }
        None => out.push_str(" (waiting)"),
    }
    if let Some(d) = &span.detail {
        let _ = write!(out, ": {d}");
    }
    out
}

fn bar_title(b: &Bar) -> String {
    let how = match (b.span.held, b.span.asks) {
        (true, 1) => "held".to_owned(),
        (true, n) => format!("held, asked {n} times"),
        (false, 1) => "answered at once".to_owned(),
        (false, n) => format!("polled, asked {n} times"),
    };
    format!(
        "{}: {} ({}, {}{})",
        b.span.client,
        describe(&b.span),
        duration_text(b.end_ms.saturating_sub(b.start_ms)),
        how,
        if b.waiting { ", still waiting" } else { "" }
    )
}

/// A tick spacing that gives about six ticks over `span_ms`.
fn tick_step(span_ms: u64) -> u64 {
    const STEPS: [u64; 16] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 1_800_000, 3_600_000, 7_200_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span_ms / s <= 6)
        .unwrap_or(span_ms.div_ceil(6).max(1))
}

/// `1.5s`, `2m05s`, `1h02m`.
pub fn duration_text(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        let tenths = ms / 100;
        if tenths.is_multiple_of(10) {
            format!("{secs}s")
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Text for HTML and SVG: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, at_ms: u64, what: What) -> Entry {
        Entry { seq, at_ms, what }
    }

    fn span(client: &str, kind: &str, id: &str, end: Option<u64>, response: Option<&str>) -> What {
        What::Request(Span {
            client: client.into(),
            kind: kind.into(),
            id: id.into(),
            end_ms: end,
            response: response.map(Into::into),
            detail: None,
            held: true,
            asks: 1,
        })
    }

    fn reg(client: &str) -> What {
        What::Registered {
            client: client.into(),
            role: "r".into(),
        }
    }

    fn sample() -> Log {
        Log {
            group: "g".into(),
            dropped: 3,
            ended: false,
            events: vec![
                entry(4, 1_000, What::Created { size: 3 }),
                entry(5, 1_000, reg("a")),
                entry(6, 1_500, reg("b")),
                entry(
                    7,
                    1_600,
                    span("a", "lava_sync", "s", Some(4_000), Some("ack")),
                ),
                entry(
                    8,
                    2_000,
                    span("b", "lava_send", "m", Some(2_000), Some("ack")),
                ),
                entry(
                    9,
                    4_000,
                    span("b", "lava_sync", "s", Some(4_000), Some("ack")),
                ),
                entry(10, 4_000, What::SyncComplete { id: "s".into() }),
                entry(11, 5_000, span("a", "lava_wait", "x", None, None)),
            ],
        }
    }

    #[test]
    fn lanes_bars_marks_and_lines() {
        let members = vec!["a".into(), "b".into(), "c".into()];
        let t = Timeline::build(&sample(), &members, Some(9_000));
        assert_eq!(
            t.lanes,
            ["a", "b", "c"],
            "registered first, then the others"
        );
        assert_eq!((t.start_ms, t.end_ms, t.dropped), (1_000, 9_000, 3));
        assert_eq!(t.bars.len(), 3, "syncs and waits are bars: {:?}", t.bars);
        let sync_a = &t.bars[0];
        assert_eq!(
            (sync_a.lane, sync_a.start_ms, sync_a.end_ms),
            (0, 1_600, 4_000)
        );
        let waiting = &t.bars[2];
        assert!(waiting.waiting);
        assert_eq!(waiting.end_ms, 9_000, "a waiting bar runs to now");
        let sends: Vec<&Mark> = t
            .marks
            .iter()
            .filter(|m| m.kind == MarkKind::Send)
            .collect();
        assert_eq!(sends.len(), 1);
        assert_eq!((sends[0].lane, sends[0].at_ms), (1, 2_000));
        assert!(t
            .lines
            .iter()
            .any(|l| l.kind == LineKind::Sync && l.at_ms == 4_000));
    }

    #[test]
    fn finished_group_ends_at_its_last_event() {
        let t = Timeline::build(&sample(), &[], None);
        assert_eq!(t.end_ms, 5_000);
        assert_eq!(
            t.bars[2].end_ms, 5_000,
            "an unanswered bar ends with the picture"
        );
        assert_eq!(t.now_ms, None);
    }

    #[test]
    fn svg_has_a_lane_per_member_and_escapes_names() {
        let mut log = sample();
        log.events.push(entry(12, 6_000, reg("<evil>&\"")));
        let svg = Timeline::build(&log, &[], Some(7_000)).svg();
        assert_eq!(svg.matches("class=\"lane-row\"").count(), 3);
        assert!(svg.contains("&lt;evil&gt;&amp;&quot;"), "{svg}");
        assert!(!svg.contains("<evil>"));
        assert!(svg.contains("class=\"now\""));
        assert!(svg.contains("sync &quot;s&quot; complete"));
        assert!(svg.contains("class=\"bar held waiting\""), "{svg}");
    }

    #[test]
    fn failures_and_verdicts_are_marked() {
        let mut log = sample();
        log.events.push(entry(
            12,
            6_000,
            What::Failed {
                client: "b".into(),
                reason: "disk full".into(),
            },
        ));
        log.events.push(entry(
            13,
            6_500,
            What::Verdict {
                text: "deadlock in group \"g\"".into(),
            },
        ));
        let t = Timeline::build(&log, &[], None);
        assert!(t
            .marks
            .iter()
            .any(|m| m.kind == MarkKind::Failed && m.lane == 1 && m.label == "failed: disk full"));
        assert!(t
            .lines
            .iter()
            .any(|l| l.kind == LineKind::Verdict && l.at_ms == 6_500));
        let svg = t.svg();
        assert!(svg.contains("class=\"fail\"") && svg.contains("class=\"verdict\""));
    }

    #[test]
    fn log_round_trips_through_json() {
        let log = sample();
        let text = serde_json::to_string(&log).unwrap();
        assert!(text.contains(r#""event":"request""#), "{text}");
        let back: Log = serde_json::from_str(&text).unwrap();
        assert_eq!(back, log);
    }

    #[test]
    fn ticks_and_durations() {
        assert_eq!(tick_step(3_000), 500);
        assert_eq!(tick_step(60_000), 10_000);
        assert_eq!(duration_text(1_500), "1.5s");
        assert_eq!(duration_text(125_000), "2m05s");
        assert_eq!(duration_text(3_720_000), "1h02m");
    }
}
