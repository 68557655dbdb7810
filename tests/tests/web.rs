//! The coordinator's web view, in a real browser (headless chromium over WebDriver) and over
//! plain HTTP: the groups page, a group's live timeline, the lab secret's login, bad input.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use lava_multinode_tests::browser::{http, Browser};
use lava_multinode_tests::{
    free_port, profile_dir, start_coordinator_with_config, wait_for_port, wait_until_held,
    wait_until_not_held, Server, STATE_DEADLINE,
};
use lava_protocol::{Reply, Request, RequestKind, Response};
use serde_json::json;

const GROUP: &str = "demo-group";

fn req(client: &str, role: &str, kind: RequestKind) -> Request {
    let mut r = Request::new(GROUP, client, role, kind);
    r.group_size = Some(3);
    r
}

/// A coordinator with its web view on a free loopback port: (server, web address).
fn coordinator_with_web(config: Option<&str>) -> (Server, String) {
    let web = format!("127.0.0.1:{}", free_port());
    let server = start_coordinator_with_config(config, &["--web", &web]);
    assert!(
        wait_for_port(&web, Duration::from_secs(10)),
        "the web view did not listen on {web}:\n{}",
        server.log_text()
    );
    (server, web)
}

/// Registers node1 (server), node2, node3 (clients); node1 sends `ready`.
fn form_group(server: &Server) {
    let c = server.client();
    for (client, role) in [
        ("node1", "server"),
        ("node2", "client"),
        ("node3", "client"),
    ] {
        c.call(&req(client, role, RequestKind::Complete))
            .expect("register");
    }
    let sent = c
        .call(&req(
            "node1",
            "server",
            RequestKind::Send {
                id: "ready".into(),
                message: json!({"ip": "192.0.2.1"}),
            },
        ))
        .expect("send");
    assert_eq!(sent.response, Response::Ack);
}

/// `client`'s sync `booted`, held by the coordinator, on a thread of its own.
fn held_sync(server: &Server, client: &'static str) -> thread::JoinHandle<Reply> {
    let c = server.client();
    thread::spawn(move || {
        let mut r = req(
            client,
            "node",
            RequestKind::Sync {
                id: "booted".into(),
                message: json!({}),
            },
        );
        r.block = Some(30.0);
        c.call(&r).expect("sync answered")
    })
}

#[test]
fn groups_page_and_a_live_timeline_in_a_browser() {
    let Some(browser) = Browser::start_or_skip("groups_page_and_a_live_timeline_in_a_browser")
    else {
        return;
    };
    let (server, web) = coordinator_with_web(None);
    form_group(&server);
    let one = held_sync(&server, "node1");
    let two = held_sync(&server, "node2");
    for client in ["node1", "node2"] {
        wait_until_held(
            &server.addr,
            GROUP,
            client,
            "lava_sync booted",
            STATE_DEADLINE,
        );
    }

    // The groups page lists the group: 3 of 3 registered, 2 held requests.
    browser.goto(&format!("http://{web}/"));
    let row = browser.run(&format!(
        "var r = document.querySelector('#groups-body tr[data-group=\"{GROUP}\"]'); \
         return r ? Array.from(r.cells).map(c => c.textContent) : null;"
    ));
    let cells: Vec<&str> = row
        .as_array()
        .unwrap_or_else(|| panic!("no row for {GROUP} on the groups page"))
        .iter()
        .map(|c| c.as_str().unwrap_or_default())
        .collect();
    assert_eq!(cells[0], GROUP);
    assert_eq!(
        (cells[1], cells[2]),
        ("3", "3"),
        "size, registered: {cells:?}"
    );
    assert_eq!(
        (cells[5], cells[6]),
        ("waiting", "2"),
        "state, held: {cells:?}"
    );

    // The group's page: a lane per member, the held syncs as bars still waiting.
    browser.goto(&format!("http://{web}/group/{GROUP}"));
    let lanes = browser.run(
        "return Array.from(document.querySelectorAll('#timeline .lane-row'))\
         .map(g => g.getAttribute('data-lane'));",
    );
    assert_eq!(lanes, json!(["node1", "node2", "node3"]));
    let held = browser.run(
        "return Array.from(document.querySelectorAll('#timeline rect.bar.held.waiting'))\
         .map(r => r.getAttribute('data-client') + ' ' + r.getAttribute('data-kind') + ' ' + r.getAttribute('data-id')).sort();",
    );
    assert_eq!(
        held,
        json!(["node1 lava_sync booted", "node2 lava_sync booted"])
    );
    let blocked = browser.run(
        "return document.querySelector('#members-body tr[data-member=\"node1\"]').cells[2].textContent;",
    );
    assert!(
        blocked
            .as_str()
            .unwrap_or_default()
            .contains("lava_sync booted"),
        "node1 is blocked on the sync: {blocked}"
    );
    // The page is live (server-sent events, no reload): the held bars grow with the time.
    browser.run("window.notReloaded = true; return null;");
    let first = browser.wait_for(
        "a live update",
        "return document.body.getAttribute('data-updated');",
        Duration::from_secs(10),
    );
    browser.wait_for(
        "another live update",
        &format!("var u = document.body.getAttribute('data-updated'); return u && u !== {first};"),
        Duration::from_secs(10),
    );
    // A click on a bar shows the request and its answer below the timeline.
    browser.run("document.querySelector('#timeline rect.bar.held').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null;");
    let detail = browser
        .run("var d = document.getElementById('detail'); return d.hidden ? null : d.textContent;");
    assert!(
        detail
            .as_str()
            .unwrap_or_default()
            .contains("lava_sync \"booted\" (waiting)"),
        "detail: {detail}"
    );
    let shot = profile_dir().join("web").join("timeline.png");
    browser.screenshot(&shot);
    println!("screenshot of the held sync: {}", shot.display());

    // node3 arrives: the sync releases, and the open page shows it without a reload.
    let three = held_sync(&server, "node3");
    for handle in [one, two, three] {
        assert_eq!(handle.join().expect("sync thread").response, Response::Ack);
    }
    for client in ["node1", "node2", "node3"] {
        wait_until_not_held(&server.addr, GROUP, client, STATE_DEADLINE);
    }
    browser.wait_for(
        "the sync's completion drawn and no bar waiting",
        "return document.querySelectorAll('#timeline line.sync').length === 1 && \
         document.querySelectorAll('#timeline rect.bar.waiting').length === 0 && \
         document.querySelectorAll('#timeline rect.bar').length === 3;",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.run("return window.notReloaded === true;"),
        json!(true)
    );
    let answered = browser.run(
        "return document.querySelector('#timeline rect.bar[data-client=\"node1\"] title').textContent;",
    );
    assert!(
        answered
            .as_str()
            .unwrap_or_default()
            .contains("lava_sync \"booted\" -> ack"),
        "the bar's title gives the answer: {answered}"
    );
    let released = profile_dir().join("web").join("timeline-released.png");
    browser.screenshot(&released);
    println!("screenshot after the release: {}", released.display());
}

#[test]
fn the_lab_secret_takes_a_login_and_an_unknown_group_is_a_clear_404() {
    let Some(browser) = Browser::start_or_skip("the_lab_secret_takes_a_login") else {
        return;
    };
    let (_server, web) = coordinator_with_web(Some(r#"{"secret": "lab-s3cret"}"#));
    // Without the secret: the login form, and nothing of the groups.
    let page = http(&web, "GET", "/", &[], "").expect("GET /");
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("name=\"secret\"") && !page.body.contains("id=\"groups\""));
    let header = http(
        &web,
        "GET",
        "/group/nope",
        &["X-Lava-Secret: lab-s3cret"],
        "",
    )
    .unwrap();
    assert_eq!(header.status, 404);
    assert!(header.body.contains("No such group"), "{}", header.body);
    let wrong = http(&web, "GET", "/", &["X-Lava-Secret: wrong"], "").unwrap();
    assert_eq!(wrong.status, 401);

    browser.goto(&format!("http://{web}/group/nope"));
    browser.run(
        "document.querySelector('input[name=secret]').value = 'lab-s3cret'; \
         document.querySelector('form').submit(); return null;",
    );
    let title = browser.wait_for(
        "the page after the login",
        "return document.readyState === 'complete' && document.querySelector('h1') && \
         document.querySelector('h1').textContent !== 'Log in' && document.querySelector('h1').textContent;",
        Duration::from_secs(10),
    );
    assert_eq!(
        title,
        json!("No such group"),
        "sent on to the page asked for"
    );
    let url = browser.run("return location.href;");
    assert!(
        !url.as_str().unwrap_or_default().contains("s3cret"),
        "the secret never in the URL: {url}"
    );
    browser.goto(&format!("http://{web}/"));
    assert_eq!(
        browser.run("return document.getElementById('groups') !== null;"),
        json!(true),
        "the cookie lets the browser in"
    );
}

/// Reads from `stream` until `needle` arrives; panics after 10 s.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).expect("read the stream");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn browsers_that_leave_mid_stream_leave_no_connection_behind() {
    let (server, web) = coordinator_with_web(None);
    form_group(&server);
    // More streams than the web view serves at once (64), each left mid-stream: were a
    // stream's connection kept after its browser went, the later ones would never start.
    for i in 0..100 {
        let mut stream = TcpStream::connect(&web).expect("connect");
        write!(
            stream,
            "GET /group/{GROUP}/events HTTP/1.1\r\nHost: {web}\r\n\r\n"
        )
        .unwrap();
        let seen = read_until(&mut stream, "event: update");
        assert!(
            seen.contains("text/event-stream"),
            "stream {i}: {seen:.300}"
        );
        drop(stream);
    }
    let started = Instant::now();
    let page = http(&web, "GET", "/", &[], "").expect("the groups page after the streams");
    assert_eq!(page.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Message data only on request: not on the group's page, on its data page.
    let group = http(&web, "GET", &format!("/group/{GROUP}"), &[], "").unwrap();
    assert_eq!(group.status, 200);
    assert!(
        !group.body.contains("192.0.2.1"),
        "no message data on the page"
    );
    assert!(group
        .body
        .contains(&format!("/group/{GROUP}/data?id=ready")));
    let data = http(
        &web,
        "GET",
        &format!("/group/{GROUP}/data?id=ready"),
        &[],
        "",
    )
    .unwrap();
    assert_eq!(data.status, 200);
    assert!(data.body.contains("192.0.2.1"), "{}", data.body);
    let none = http(
        &web,
        "GET",
        &format!("/group/{GROUP}/data?id=nope"),
        &[],
        "",
    )
    .unwrap();
    assert_eq!(none.status, 404);
    // An unknown group's stream is a 404, not an endless stream.
    let gone = http(&web, "GET", "/group/nope/events", &[], "").unwrap();
    assert_eq!(gone.status, 404);
    let nonsense = http(&web, "GET", "/group/%zz", &[], "").unwrap();
    assert_eq!(nonsense.status, 400);
    let other = http(&web, "GET", "/etc/passwd", &[], "").unwrap();
    assert_eq!(other.status, 404);
}

#[test]
fn an_oversized_history_keeps_its_newest_events_within_the_bound() {
    let (server, web) = coordinator_with_web(Some(r#"{"history_group_bytes": 8192}"#));
    form_group(&server);
    let c = server.client();
    for i in 0..300 {
        c.call(&req(
            "node2",
            "client",
            RequestKind::Send {
                id: format!("m{i}"),
                message: json!({"i": i}),
            },
        ))
        .expect("send");
    }
    let json = http(
        &web,
        "GET",
        &format!("/group/{GROUP}/history.json"),
        &[],
        "",
    )
    .unwrap();
    assert_eq!(json.status, 200);
    let log: serde_json::Value = serde_json::from_str(&json.body).expect("history.json");
    let events = log["events"].as_array().expect("events");
    let dropped = log["dropped"].as_u64().expect("dropped");
    assert!(
        dropped > 0 && events.len() < 100,
        "{dropped} dropped, {} kept",
        events.len()
    );
    assert_eq!(events.last().unwrap()["id"], "m299", "the newest is kept");
    let page = http(&web, "GET", &format!("/group/{GROUP}"), &[], "").unwrap();
    assert!(
        page.body
            .contains(&format!("The {dropped} oldest events were dropped")),
        "the page says so"
    );
    // The status view gives the same history.
    let status = lava_multinode_tests::coordinator_status(&server.addr, Some(GROUP)).unwrap();
    assert_eq!(status["history"]["dropped"], dropped);
}

/// The history is stored with the state: after SIGTERM all of it, after kill -9 what a
/// change of state carried (at most once a second), a restarted coordinator shows it.
#[test]
fn the_history_survives_a_restart_where_the_state_does() {
    let dir = lava_multinode_tests::TempDir::new("web-restart");
    let state = dir.path().join("state.db");
    let start = || {
        let web = format!("127.0.0.1:{}", free_port());
        let server = start_coordinator_with_config(
            None,
            &["--web", &web, "--state", &state.display().to_string()],
        );
        assert!(wait_for_port(&web, Duration::from_secs(10)));
        (server, web)
    };
    let history = |web: &str| -> serde_json::Value {
        let answer = http(web, "GET", &format!("/group/{GROUP}/history.json"), &[], "").unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    };
    let (mut server, web) = start();
    form_group(&server);
    let syncs = [
        held_sync(&server, "node1"),
        held_sync(&server, "node2"),
        held_sync(&server, "node3"),
    ];
    for s in syncs {
        assert_eq!(s.join().unwrap().response, Response::Ack);
    }
    let before = history(&web);
    assert!(server.terminate().success());

    let (mut server, web) = start();
    let after = history(&web);
    assert_eq!(after, before, "the same history after SIGTERM");
    assert!(after["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "sync_complete" && e["id"] == "booted"));
    // A change of state after the restart, then kill -9: its history went with it.
    let sent = server
        .client()
        .call(&req(
            "node2",
            "client",
            RequestKind::Send {
                id: "after-restart".into(),
                message: json!({}),
            },
        ))
        .unwrap();
    assert_eq!(sent.response, Response::Ack);
    // History rows go to the store with a change of state at most once a second: let that
    // second pass on purpose, then a change of state carries them.
    thread::sleep(Duration::from_millis(1100));
    let carrier = server
        .client()
        .call(&req(
            "node3",
            "client",
            RequestKind::Send {
                id: "carrier".into(),
                message: json!({}),
            },
        ))
        .unwrap();
    assert_eq!(carrier.response, Response::Ack);
    server.child.kill().unwrap();
    let _ = server.child.wait();
    drop(server);

    let (_server, web) = start();
    let last = history(&web);
    let events = last["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "lava_send"
            && e["id"] == "after-restart"
            && e["response"] == "ack"),
        "{last}"
    );
    assert!(events.len() > before["events"].as_array().unwrap().len());
}
