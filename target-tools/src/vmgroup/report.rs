//! `report.html` in the log folder at the end of a run: one file that opens offline (style
//! and picture inline, no script, nothing fetched) with the results table, each node's boot
//! and test times, and the group's timeline: from the coordinator's history when it is ours
//! (the `status` request for the group), else from the launcher's own record of the VMs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lava_protocol::timeline::{duration_text, escape, Entry, Log, Span, Timeline, What};
use serde_json::{json, Value};

use super::launcher::VmReport;
use super::results::CaseResult;

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a node ended, for the nodes table.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub client: String,
    pub role: String,
    /// `ok`, `failed (...)`, `unknown`.
    pub status: String,
    pub started_ms: u64,
    pub booted_after: Option<Duration>,
    pub ran: Duration,
    pub console: PathBuf,
}

impl NodeRow {
    pub fn of(r: &VmReport, status: String) -> NodeRow {
        NodeRow {
            client: r.client.clone(),
            role: r.role.clone(),
            status,
            started_ms: r.started_ms,
            booted_after: r.booted_after,
            ran: r.ran,
            console: r.log.clone(),
        }
    }
}

/// Where the timeline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Coordinator,
    Launcher,
}

/// The group's history from the coordinator at `addr`, when it keeps one (ours does; LAVA's
/// answers `status` with something else).
pub fn coordinator_history(addr: &str, group: &str, secret: Option<&str>) -> Option<Log> {
    let mut query = json!({"request": "status", "group": group});
    if let Some(secret) = secret {
        query["secret"] = secret.into();
    }
    let body = lava_protocol::Client::new(addr)
        .with_connect_timeout(Duration::from_secs(3))
        .with_io_timeout(Duration::from_secs(10))
        .call_raw(&query.to_string(), None)
        .ok()??;
    let answer: Value = serde_json::from_str(&body).ok()?;
    if answer["response"] != "status" {
        return None;
    }
    serde_json::from_value(answer["history"].clone()).ok()
}

/// The launcher's own record: each VM's boot (from its start to its login prompt or first
/// marker) and its run after that, as bars in its lane.
pub fn own_record(group: &str, nodes: &[NodeRow]) -> Log {
    let mut events = Vec::new();
    let mut seq = 0;
    let mut push = |at_ms, what| {
        seq += 1;
        events.push(Entry { seq, at_ms, what });
    };
    for n in nodes {
        push(
            n.started_ms,
            What::Registered {
                client: n.client.clone(),
                role: n.role.clone(),
            },
        );
    }
    for n in nodes {
        let end = n.started_ms + n.ran.as_millis() as u64;
        let booted = n.booted_after.map(|b| n.started_ms + b.as_millis() as u64);
        let bar = |kind: &str, end_ms, response: &str| {
            What::Request(Span {
                client: n.client.clone(),
                kind: kind.to_owned(),
                id: String::new(),
                end_ms: Some(end_ms),
                response: Some(response.to_owned()),
                detail: None,
                held: false,
                asks: 1,
            })
        };
        match booted {
            Some(booted) => {
                push(n.started_ms, bar("vm_boot", booted, "booted"));
                push(booted, bar("vm_test", end, &n.status));
            }
            None => push(n.started_ms, bar("vm_boot", end, &n.status)),
        }
    }
    events.sort_by_key(|e| e.at_ms);
    Log {
        group: group.to_owned(),
        dropped: 0,
        ended: true,
        events,
    }
}

fn secs(d: Duration) -> String {
    duration_text(d.as_millis() as u64)
}

/// The page.
pub fn html(
    group: &str,
    nodes: &[NodeRow],
    results: &[CaseResult],
    failures: &[String],
    log: &Log,
    source: Source,
) -> String {
    let mut body = String::new();
    let verdict = if failures.is_empty() {
        "<p class=\"passed\">The VM group passed.</p>".to_owned()
    } else {
        format!(
            "<p class=\"failed\">The VM group failed: {}</p>",
            escape(&failures.join("; "))
        )
    };
    let _ = write!(
        body,
        "<h1>VM group <span class=\"name\">{}</span></h1>{verdict}",
        escape(group)
    );
    body.push_str(
        "<h2>Nodes</h2><table id=\"nodes\"><thead><tr><th>node</th><th>role</th>\
         <th>status</th><th>booted in</th><th>ran</th><th>console</th></tr></thead><tbody>",
    );
    for n in nodes {
        let console = n
            .console
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-node=\"{client}\"><td>{client}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td><a href=\"{link}\">{link_text}</a></td></tr>",
            escape(&n.role),
            escape(&n.status),
            n.booted_after.map(secs).unwrap_or_else(|| "-".into()),
            secs(n.ran),
            client = escape(&n.client),
            link = escape(&console.replace('%', "%25").replace('#', "%23").replace('?', "%3F")),
            link_text = escape(&console),
        );
    }
    body.push_str("</tbody></table><h2>Results</h2>");
    if results.is_empty() {
        body.push_str("<p class=\"hint\">No test results were reported.</p>");
    } else {
        body.push_str(
            "<table id=\"results\"><thead><tr><th>node</th><th>test definition</th><th>case</th>\
             <th>result</th></tr></thead><tbody>",
        );
        for r in results {
            let case = match &r.set {
                Some(set) => format!("{set}/{}", r.case),
                None => r.case.clone(),
            };
            let mut result = r.result.clone();
            if let Some(m) = &r.measurement {
                let _ = write!(
                    result,
                    " ({m}{})",
                    r.units
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                );
            }
            let _ = write!(
                body,
                "<tr class=\"result-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.result),
                escape(&r.node),
                escape(&r.suite),
                escape(&case),
                escape(&result)
            );
        }
        body.push_str("</tbody></table>");
    }
    let members: Vec<String> = nodes.iter().map(|n| n.client.clone()).collect();
    let timeline = Timeline::build(log, &members, None);
    let _ = write!(
        body,
        "<h2>Timeline</h2><p class=\"hint\">{}{} Hover a bar or a mark for the request and its answer.</p>\
         <div id=\"timeline\">{}</div>",
        match source {
            Source::Coordinator => "From the coordinator's history of the group: each wait or \
                sync a bar from its request to its answer (orange: held by the coordinator), \
                sends as marks, a dashed line where a sync round completed.",
            Source::Launcher => "From the launcher's own record (the coordinator keeps no \
                history of the group): each VM's boot, then its run.",
        },
        match log.dropped {
            0 => String::new(),
            n => format!(" The {n} oldest events were dropped by the coordinator's bounds."),
        },
        timeline.svg()
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <title>VM group {} - report</title><style>{STYLE}</style></head><body>{body}\
         <p class=\"hint\">Written by lava-multinode {} at the end of the run.</p></body></html>\n",
        escape(group),
        env!("CARGO_PKG_VERSION")
    )
}

const STYLE: &str = "body{font:14px/1.4 sans-serif;margin:16px;color:#222}h1{font-size:20px}\
h2{font-size:16px;margin-top:20px}table{border-collapse:collapse}\
th,td{border-bottom:1px solid #e0e0e0;padding:4px 10px;text-align:left}td.n{text-align:right}\
.passed{color:#2e7d32}.failed,.result-fail td{color:#b71c1c}.hint{color:#666;font-size:12px}\
#timeline{overflow-x:auto}";

/// Writes `report.html` into `dir`; returns its path.
pub fn write(dir: &Path, page: &str) -> Result<PathBuf, String> {
    let path = dir.join("report.html");
    std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(client: &str, booted: Option<u64>) -> NodeRow {
        NodeRow {
            client: client.into(),
            role: "client".into(),
            status: "ok".into(),
            started_ms: 10_000,
            booted_after: booted.map(Duration::from_millis),
            ran: Duration::from_millis(5_000),
            console: PathBuf::from(format!("/logs/{client}.log")),
        }
    }

    #[test]
    fn the_launchers_record_has_a_boot_and_a_run_per_vm() {
        let nodes = [node("a", Some(1_500)), node("b", None)];
        let log = own_record("g", &nodes);
        let t = Timeline::build(&log, &[], None);
        assert_eq!(t.lanes, ["a", "b"]);
        let bars: Vec<(usize, &str, u64, u64)> = t
            .bars
            .iter()
            .map(|b| (b.lane, b.span.kind.as_str(), b.start_ms, b.end_ms))
            .collect();
        assert!(bars.contains(&(0, "vm_boot", 10_000, 11_500)), "{bars:?}");
        assert!(bars.contains(&(0, "vm_test", 11_500, 15_000)), "{bars:?}");
        assert!(
            bars.contains(&(1, "vm_boot", 10_000, 15_000)),
            "never booted: {bars:?}"
        );
    }

    #[test]
    fn the_page_is_one_offline_file() {
        let nodes = [node("a<b", Some(1_000))];
        let results = [CaseResult {
            node: "a<b".into(),
            suite: "0_smoke".into(),
            set: None,
            case: "ping".into(),
            result: "fail".into(),
            measurement: None,
            units: None,
        }];
        let log = own_record("g", &nodes);
        let page = html(
            "g",
            &nodes,
            &results,
            &["a case failed".into()],
            &log,
            Source::Launcher,
        );
        assert!(page.contains("a&lt;b") && !page.contains("a<b"));
        assert!(page.contains("<svg class=\"timeline\""));
        assert!(page.contains("The VM group failed: a case failed"));
        assert!(page.contains("launcher's own record"));
        for external in ["http://", "https://", "<script", "src="] {
            let outside = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside.contains(external), "{external} in the page");
        }
    }
}
