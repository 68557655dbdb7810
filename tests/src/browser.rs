//! A real browser for the web tests: Debian's headless `chromium` driven over WebDriver
//! (`chromedriver`, from the `chromium-driver` package), with a small blocking HTTP client
//! for the WebDriver calls and for plain requests to the pages.
//!
//! Without chromium the web tests are skipped with a notice, or fail with
//! `LAVA_MULTINODE_REQUIRE_BROWSER=1` (as `cargo xtask test` sets).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{free_port, wait_for_port, TempDir};

pub const REQUIRE_BROWSER_ENV: &str = "LAVA_MULTINODE_REQUIRE_BROWSER";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags that work in a container as root with no network: no sandbox, no GPU, nothing
/// fetched in the background.
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
];

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`): `method path`
/// with `headers` (`Name: value` lines) and `body`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "DELETE" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // Read the head, then as much body as it announces (chromedriver keeps the connection
    // open whatever `Connection` says), or up to the end for a chunked or unsized body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "closed before an HTTP answer: {:.200}",
                String::from_utf8_lossy(&raw)
            )));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let headers = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let lower = headers.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[head_end..];
        let done = match length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {headers:.200}")))?;
    Ok(Answer {
        status,
        headers: headers.trim_end().to_owned(),
        body: if chunked { dechunk(&body) } else { body },
    })
}

/// The body of a chunked answer.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Why no browser can run here, if none can.
pub fn unavailable() -> Option<String> {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{path} is missing (apt-get install chromium chromium-driver; tests/prepare.sh \
                 installs {package})"
            ));
        }
    }
    None
}

/// A headless chromium session; closed (and chromedriver stopped) when dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// A browser, or `None` after printing why the test is skipped; with
    /// `LAVA_MULTINODE_REQUIRE_BROWSER=1` a missing browser fails the test instead.
    pub fn start_or_skip(test: &str) -> Option<Browser> {
        if let Some(why) = unavailable() {
            if std::env::var(REQUIRE_BROWSER_ENV).is_ok_and(|v| v == "1") {
                panic!("{test}: {why} ({REQUIRE_BROWSER_ENV}=1 makes this a failure)");
            }
            eprintln!(
                "NOTICE: skipping {test}: {why} (set {REQUIRE_BROWSER_ENV}=1 to fail instead)"
            );
            return None;
        }
        Some(Browser::start())
    }

    fn start() -> Browser {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let profile = TempDir::new("chromium-profile");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        assert!(
            wait_for_port(&browser.addr, Duration::from_secs(20)),
            "chromedriver did not listen on {}",
            browser.addr
        );
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let answer = browser.call("POST", "/session", Some(caps));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        browser
    }

    /// A WebDriver call; returns its `value`. Panics on an error, with WebDriver's words.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let answer = http(
            &self.addr,
            method,
            path,
            &["Content-Type: application/json"],
            &body,
        )
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {:.300}", answer.body));
        if answer.status != 200 {
            panic!("WebDriver {method} {path}: {} {}", answer.status, value);
        }
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn run(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns something truthy (not false, null, 0 or ""); returns
    /// that. Panics after `deadline` with `what` and the last value.
    #[track_caller]
    pub fn wait_for(&self, what: &str, script: &str, deadline: Duration) -> Value {
        let started = Instant::now();
        loop {
            let v = self.run(script);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if started.elapsed() > deadline {
                panic!("after {deadline:?} the page still not: {what}; last: {v}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the window at `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("WebDriver screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
