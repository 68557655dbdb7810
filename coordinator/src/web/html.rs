//! The web view's pages as HTML text: everything inline (style, script, SVG), nothing
//! fetched from elsewhere. Tables are plain HTML and work without JavaScript; the script
//! only keeps them live and shows a request's details on a click.

use std::fmt::Write as _;
use std::time::Duration;

use lava_protocol::timeline::{duration_text, escape};

use crate::history::event_text;

use super::view::{GroupRow, GroupView, MemberRow, SortKey};

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("live.js");

/// Events listed under the timeline, newest last; older ones are in the JSON history.
const EVENTS_LISTED: usize = 500;

/// A URL path segment: everything but unreserved characters percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn secs(d: Duration) -> String {
    duration_text(d.as_millis() as u64)
}

/// A whole page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} - lava-coordinator</title><style>{STYLE}</style></head>\
         <body><header><a href=\"/\">lava-coordinator</a> <span class=\"version\">{}</span></header>\
         <main>{body}</main><script>{SCRIPT}</script></body></html>\n",
        escape(title),
        env!("CARGO_PKG_VERSION")
    )
}

/// The body rows of the groups table.
pub fn group_rows(rows: &[GroupRow]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        s.push_str("<tr><td colspan=\"7\" class=\"empty\">no groups</td></tr>");
    }
    for r in rows {
        let _ = write!(
            s,
            "<tr class=\"state-{state}\" data-group=\"{name}\"><td><a href=\"/group/{link}\">{name}</a></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td><span class=\"state\">{state}</span></td><td class=\"n\">{}</td></tr>",
            r.size,
            r.registered,
            secs(r.age),
            secs(r.idle),
            r.held,
            state = r.state.name(),
            name = escape(&r.name),
            link = encode(&r.name),
        );
    }
    s
}

/// The groups page: a table sortable by its headers (links, so that it works without
/// JavaScript), kept live by the script.
pub fn groups_page(rows: &[GroupRow], key: SortKey, descending: bool) -> String {
    let mut head = String::new();
    for (k, name) in SortKey::ALL {
        let (label, link_desc) = match k {
            SortKey::Held => ("held requests", true),
            SortKey::Age | SortKey::Idle | SortKey::Size => (name, true),
            _ => (name, false),
        };
        // Clicking the current key turns its order round.
        let desc = if k == key { !descending } else { link_desc };
        let arrow = match (k == key, descending) {
            (false, _) => "",
            (true, false) => " ▲",
            (true, true) => " ▼",
        };
        if k == SortKey::Size {
            let _ = write!(
                head,
                "<th><a href=\"/?sort=size{}\">size{arrow}</a></th><th>registered</th>",
                if desc { "&amp;desc" } else { "" }
            );
            continue;
        }
        let _ = write!(
            head,
            "<th><a href=\"/?sort={name}{}\">{label}{arrow}</a></th>",
            if desc { "&amp;desc" } else { "" }
        );
    }
    let query = format!(
        "?sort={}{}",
        key.name(),
        if descending { "&desc" } else { "" }
    );
    page(
        "groups",
        &format!(
            "<h1>Groups</h1><p class=\"hint\">Stuck groups first (a request held longer than \
             blocked_log_after), then the longest idle. Click a header to sort.</p>\
             <table id=\"groups\" data-live=\"/events{}\"><thead><tr>{head}</tr></thead>\
             <tbody id=\"groups-body\">{}</tbody></table>",
            escape(&query),
            group_rows(rows)
        ),
    )
}

/// The summary line under a group's title.
pub fn group_summary(v: &GroupView) -> String {
    let r = &v.row;
    let mut s = format!(
        "<span class=\"state state-{state}\">{state}</span> {}/{} registered, age {}, idle {}, {} waiting",
        r.registered,
        r.size,
        secs(r.age),
        secs(r.idle),
        r.held,
        state = r.state.name()
    );
    if v.log.dropped > 0 {
        let _ = write!(
            s,
            "<p class=\"dropped\">The {} oldest events were dropped to keep the history within \
             the coordinator's memory bound (history_group_bytes, history_total_bytes).</p>",
            v.log.dropped
        );
    }
    s
}

/// The body rows of a group's members table.
pub fn member_rows(group: &str, members: &[MemberRow]) -> String {
    let mut s = String::new();
    for m in members {
        let blocked = if m.blocked.is_empty() {
            "-".to_owned()
        } else {
            m.blocked
                .iter()
                .map(|(what, d)| {
                    format!(
                        "{} <span class=\"since\">for {}</span>",
                        escape(what),
                        secs(*d)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let sent = m
            .sent
            .iter()
            .map(|id| {
                format!(
                    "<a href=\"/group/{}/data?id={}\">{}</a>",
                    encode(group),
                    encode(id),
                    escape(id)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut state = String::new();
        if let Some(reason) = &m.failed {
            let _ = write!(
                state,
                "<span class=\"state state-failed\">failed</span> {}",
                escape(reason)
            );
        }
        if m.cleared {
            state.push_str(" cleared");
        }
        let _ = write!(
            s,
            "<tr data-member=\"{name}\"><td>{name}</td><td>{}</td><td>{blocked}</td><td>{}</td><td>{state}</td></tr>",
            escape(&m.role),
            if sent.is_empty() { "-".to_owned() } else { sent },
            name = escape(&m.name),
        );
    }
    s
}

/// The events table: the newest `EVENTS_LISTED`, one line each.
pub fn event_rows(v: &GroupView) -> String {
    let start = v.timeline.start_ms;
    let skip = v.log.events.len().saturating_sub(EVENTS_LISTED);
    let mut s = String::new();
    if skip > 0 {
        let _ = write!(
            s,
            "<tr><td colspan=\"3\" class=\"empty\">{skip} older events not listed here (see history.json)</td></tr>"
        );
    }
    for e in v.log.events.iter().skip(skip) {
        let (who, what) = event_text(e);
        let _ = write!(
            s,
            "<tr id=\"e{}\"><td class=\"n\">+{}</td><td>{}</td><td>{}</td></tr>",
            e.seq,
            duration_text(e.at_ms.saturating_sub(start)),
            escape(&who),
            escape(&what)
        );
    }
    s
}

/// A group's page.
pub fn group_page(v: &GroupView) -> String {
    let name = &v.row.name;
    let link = encode(name);
    page(
        &format!("group {name}"),
        &format!(
            "<h1>Group <span class=\"name\">{}</span></h1>\
             <div id=\"summary\" data-live=\"/group/{link}/events\">{}</div>\
             <h2>Members</h2><table id=\"members\"><thead><tr><th>member</th><th>role</th>\
             <th>blocked on</th><th>sent</th><th>state</th></tr></thead>\
             <tbody id=\"members-body\">{}</tbody></table>\
             <h2>Timeline</h2><div id=\"timeline\">{}</div>\
             <p class=\"legend\"><span class=\"key bar\"></span>a wait or sync, from its request to its answer \
             <span class=\"key held\"></span>held by the coordinator <span class=\"key polled\"></span>polled \
             <span class=\"key nack\"></span>answered nack ◆ a send or other request \
             <span class=\"key sync\"></span>a sync round complete <span class=\"key verdict\"></span>a verdict \
             ✕ a failure <span class=\"key now\"></span>now. \
             Hover for the request and its answer; click to keep it below.</p>\
             <div id=\"detail\" hidden><pre></pre><p><a id=\"data-link\" hidden>show the message data</a></p></div>\
             <h2>Events</h2><p><a href=\"/group/{link}/history.json\">history.json</a></p>\
             <table id=\"events\"><thead><tr><th>time</th><th>member</th><th>what</th></tr></thead>\
             <tbody id=\"events-body\">{}</tbody></table>",
            escape(name),
            group_summary(v),
            member_rows(name, &v.members),
            v.timeline.svg(),
            event_rows(v)
        ),
    )
}

/// The stored data of message `id`, by sender.
pub fn data_page(group: &str, id: &str, data: &[(String, String)]) -> String {
    let mut rows = String::new();
    for (sender, json) in data {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td><pre>{}</pre></td></tr>",
            escape(sender),
            escape(json)
        );
    }
    page(
        &format!("{id} in {group}"),
        &format!(
            "<h1>Message <span class=\"name\">{}</span> in group <a href=\"/group/{}\">{}</a></h1>\
             <table><thead><tr><th>sender</th><th>data</th></tr></thead><tbody>{rows}</tbody></table>",
            escape(id),
            encode(group),
            escape(group)
        ),
    )
}

/// A page that says what went wrong.
pub fn problem_page(title: &str, text: &str) -> String {
    page(
        title,
        &format!(
            "<h1>{}</h1><p class=\"problem\">{}</p><p><a href=\"/\">all groups</a></p>",
            escape(title),
            escape(text)
        ),
    )
}

/// The login form (the lab secret goes in a POST body, never in the URL).
pub fn login_page(next: &str, wrong: bool) -> String {
    page(
        "log in",
        &format!(
            "<h1>Log in</h1>{}<form method=\"post\" action=\"/login\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <label>Lab secret <input type=\"password\" name=\"secret\" autofocus></label> \
             <button type=\"submit\">Log in</button></form>\
             <p class=\"hint\">Scripts may send the secret in an <code>X-Lava-Secret</code> header instead.</p>",
            if wrong {
                "<p class=\"problem\">That is not the lab secret.</p>"
            } else {
                ""
            },
            escape(next)
        ),
    )
}
