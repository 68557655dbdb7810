//! The web view: groups and each group's timeline, over HTTP/1.1 on an address of its own
//! (`web_listen`, `--web`). Behind the coordinator's `allow` list, and its lab secret when
//! one is set (a login form that sets a session cookie, or an `X-Lava-Secret` header; never
//! in the URL). Connections are bounded; live pages are server-sent event streams that end
//! when the browser goes away (the stream's body is dropped with its connection).
//!
//! hyper does the HTTP (parsing, keep-alive, streamed bodies) on the server's own tokio;
//! the pages are rendered by `html` from the model in `view`.

mod html;
pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::same_secret;
use crate::server::Shared;
use view::SortKey;

/// Connections served at once (each live page holds one); more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// A live stream ends after this; the browser's `EventSource` opens a new one.
const STREAM_FOR: Duration = Duration::from_secs(600);
/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (the login form).
const MAX_BODY: usize = 4096;
/// The session cookie's name.
const COOKIE: &str = "lava_web";

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// What the web view needs besides the shared state.
struct Web {
    shared: Arc<Shared>,
    /// The session token a login sets as a cookie: random per process, so a restart logs
    /// everybody out and the secret itself is never stored in a browser.
    session: String,
}

/// A random token, or `None` when the kernel gives no randomness.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: a valid buffer of the given length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    (n == bytes.len() as isize).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Binds the web view's address.
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the web view until `shutdown`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let Some(session) = random_token() else {
        warn!("web view: no randomness for a session token: not serving");
        return;
    };
    let web = Arc::new(Web {
        shared: shared.clone(),
        session,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // The server's accept loop: bounded, and counted against max_connections_per_address
    // with the address's other connections.
    crate::server::accept(
        &listener,
        &shared,
        &slots,
        &shutdown,
        crate::server::refuse_http,
        |stream, peer| {
            let web = web.clone();
            let shutdown = shutdown.clone();
            async move {
                let service = hyper::service::service_fn(|req| {
                    let web = web.clone();
                    async move { Ok::<_, Infallible>(web.handle(req, peer).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                // A connection lives at most as long as one stream, plus a little.
                let bound = STREAM_FOR + Duration::from_secs(60);
                tokio::select! {
                    done = tokio::time::timeout(bound, conn) => match done {
                        Ok(Err(e)) => debug!("web view: {peer}: {e}"),
                        Err(_) => debug!("web view: {peer}: connection closed after {bound:?}"),
                        Ok(Ok(())) => {}
                    },
                    _ = shutdown.cancelled() => {}
                }
            }
        },
    )
    .await;
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Pages use nothing from elsewhere: say so, so that a browser refuses it too.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Reply {
    full(status, "text/html; charset=utf-8", body)
}

fn redirect(to: &str) -> Reply {
    let mut r = full(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Percent-decoding of a path segment or form value (`+` is a space in forms).
fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `key=value&...` pairs, decoded; undecodable ones left out.
fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k, true)?, decode(v, true)?))
        })
        .collect()
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Where a login may send the browser on: a path of ours, nothing else.
fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

enum Auth {
    Ok,
    Forbidden(&'static str),
    Login,
}

impl Web {
    fn auth(&self, req: &Request<Incoming>, peer: SocketAddr) -> Auth {
        let access = self.shared.access();
        if !access.admits(peer.ip()) {
            return Auth::Forbidden("this address is not allowed to use the coordinator");
        }
        let Some(secret) = &access.secret else {
            return Auth::Ok;
        };
        if access.secret_exempt.iter().any(|c| c.contains(peer.ip())) {
            return Auth::Ok;
        }
        let headers = req.headers();
        let given = headers
            .get("x-lava-secret")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        if given.is_some() && same_secret(secret, given) {
            return Auth::Ok;
        }
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v);
        if same_secret(&self.session, cookie) {
            Auth::Ok
        } else {
            Auth::Login
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        match self.auth(&req, peer) {
            Auth::Ok => {}
            Auth::Forbidden(why) => {
                self.shared
                    .metrics
                    .failure(crate::metrics::Failure::Refused);
                debug!("web view: refused {peer}: {why}");
                return html(
                    StatusCode::FORBIDDEN,
                    html::problem_page("Not allowed", why),
                );
            }
            Auth::Login if req.method() == Method::POST && path == "/login" => {
                return self.login(req).await;
            }
            Auth::Login => {
                let next = match query.is_empty() {
                    true => path,
                    false => format!("{path}?{query}"),
                };
                return html(StatusCode::UNAUTHORIZED, html::login_page(&next, false));
            }
        }
        if req.method() == Method::POST && path == "/login" {
            // Logged in already (or no secret): nothing to check.
            let next = self
                .login_form(req)
                .await
                .and_then(|f| value(&f, "next").map(str::to_owned));
            return redirect(local_path(next.as_deref().unwrap_or("/")));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return html(
                StatusCode::METHOD_NOT_ALLOWED,
                html::problem_page("Not allowed", "only GET is served here"),
            );
        }
        self.route(&path, &query)
    }

    async fn login_form(&self, req: Request<Incoming>) -> Option<Vec<(String, String)>> {
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .ok()?;
        let text = String::from_utf8(body.to_bytes().to_vec()).ok()?;
        Some(form(&text))
    }

    async fn login(&self, req: Request<Incoming>) -> Reply {
        let Some(fields) = self.login_form(req).await else {
            return html(
                StatusCode::BAD_REQUEST,
                html::problem_page("Bad login", "the form was over 4 KiB or not text"),
            );
        };
        let next = local_path(value(&fields, "next").unwrap_or("/")).to_owned();
        let secret = self.shared.access().secret.clone();
        match secret {
            Some(secret) if same_secret(&secret, value(&fields, "secret")) => {
                let mut r = redirect(&next);
                let cookie = format!(
                    "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                    self.session
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            _ => html(StatusCode::UNAUTHORIZED, html::login_page(&next, true)),
        }
    }

    fn stuck_after(&self) -> Duration {
        self.shared.settings().blocked_log_after()
    }

    fn route(self: &Arc<Self>, path: &str, query: &str) -> Reply {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let query = form(query);
        match segments.as_slice() {
            [""] => self.groups_page(&query),
            ["events"] => self.stream(Live::Groups(sort_of(&query))),
            ["group", name, rest @ ..] => {
                let Some(name) = decode(name, false) else {
                    return html(
                        StatusCode::BAD_REQUEST,
                        html::problem_page(
                            "Bad address",
                            "the group name is not valid percent-encoded UTF-8",
                        ),
                    );
                };
                match rest {
                    [] => self.group_page(&name),
                    ["events"] => self.stream(Live::Group(name)),
                    ["history.json"] => self.history_json(&name),
                    ["data"] => self.data_page(&name, value(&query, "id").unwrap_or("")),
                    _ => not_found(path),
                }
            }
            _ => not_found(path),
        }
    }

    fn groups_page(&self, query: &[(String, String)]) -> Reply {
        let (key, desc) = sort_of(query);
        let rows = self.rows(key, desc);
        html(StatusCode::OK, html::groups_page(&rows, key, desc))
    }

    fn rows(&self, key: SortKey, desc: bool) -> Vec<view::GroupRow> {
        let stuck_after = self.stuck_after();
        let mut rows = self
            .shared
            .read(|m, h, now, wall| view::group_rows(m, h, now, wall, stuck_after));
        view::sort(&mut rows, key, desc);
        rows
    }

    fn group(&self, name: &str) -> Option<view::GroupView> {
        let stuck_after = self.stuck_after();
        self.shared
            .read(|m, h, now, wall| view::group_view(name, m, h, now, wall, stuck_after))
    }

    fn group_page(&self, name: &str) -> Reply {
        match self.group(name) {
            Some(v) => html(StatusCode::OK, html::group_page(&v)),
            None => no_group(name),
        }
    }

    fn history_json(&self, name: &str) -> Reply {
        match self.shared.read(|_, h, _, _| h.log(name)) {
            Some(log) => full(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&log).unwrap_or_default(),
            ),
            None => no_group(name),
        }
    }

    fn data_page(&self, name: &str, id: &str) -> Reply {
        let data = self.shared.read(|m, _, _, _| {
            m.group(name).map(|g| {
                g.messages
                    .get(id)
                    .map(|by| {
                        by.iter()
                            .map(|(sender, data)| {
                                (
                                    sender.clone(),
                                    serde_json::to_string_pretty(data).unwrap_or_default(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
        });
        match data {
            None => no_group(name),
            Some(data) if data.is_empty() => html(
                StatusCode::NOT_FOUND,
                html::problem_page(
                    "No such message",
                    &format!("group {name:?} keeps no message {id:?}"),
                ),
            ),
            Some(data) => html(StatusCode::OK, html::data_page(name, id, &data)),
        }
    }

    fn stream(self: &Arc<Self>, live: Live) -> Reply {
        if let Live::Group(name) = &live {
            if self.group(name).is_none() {
                return no_group(name);
            }
        }
        let body = Stream {
            web: self.clone(),
            live,
            tick: tokio::time::interval(Duration::from_secs(1)),
            until: Instant::now() + STREAM_FOR,
            last: String::new(),
            quiet: 0,
            done: false,
        };
        let mut r = Response::new(body.boxed());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn sort_of(query: &[(String, String)]) -> (SortKey, bool) {
    let key = value(query, "sort")
        .and_then(SortKey::parse)
        .unwrap_or(SortKey::State);
    (key, value(query, "desc").is_some())
}

fn not_found(path: &str) -> Reply {
    html(
        StatusCode::NOT_FOUND,
        html::problem_page("Not found", &format!("there is no page {path}")),
    )
}

fn no_group(name: &str) -> Reply {
    html(
        StatusCode::NOT_FOUND,
        html::problem_page(
            "No such group",
            &format!(
                "the coordinator has no group {:?} and keeps no history of one (never created, \
                 or its history was dropped to keep within history_total_bytes)",
                crate::state::bounded(name)
            ),
        ),
    )
}

/// What a live stream keeps up to date.
enum Live {
    Groups((SortKey, bool)),
    Group(String),
}

/// A server-sent event stream: every second, the page's parts as they are now when they
/// changed (a comment every 15 s otherwise, so that a gone browser is noticed). Dropped with
/// its connection, so a browser that goes away leaves nothing behind.
struct Stream {
    web: Arc<Web>,
    live: Live,
    tick: tokio::time::Interval,
    until: Instant,
    last: String,
    quiet: u32,
    done: bool,
}

impl Stream {
    /// The next event's data (JSON: element id -> inner HTML); `None`: the group is gone.
    fn parts(&self) -> Option<String> {
        let parts = match &self.live {
            Live::Groups((key, desc)) => {
                serde_json::json!({"groups-body": html::group_rows(&self.web.rows(*key, *desc))})
            }
            Live::Group(name) => {
                let v = self.web.group(name)?;
                serde_json::json!({
                    "summary": html::group_summary(&v),
                    "members-body": html::member_rows(name, &v.members),
                    "timeline": v.timeline.svg(),
                    "events-body": html::event_rows(&v),
                })
            }
        };
        Some(parts.to_string())
    }
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.tick.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= this.until {
                this.done = true;
                return Poll::Ready(None);
            }
            let text = match this.parts() {
                None => {
                    this.done = true;
                    "event: gone\ndata: {}\n\n".to_owned()
                }
                Some(parts) if parts == this.last => {
                    this.quiet += 1;
                    if this.quiet < 15 {
                        // Nothing new: wait for the next tick.
                        continue;
                    }
                    this.quiet = 0;
                    ": still here\n\n".to_owned()
                }
                Some(parts) => {
                    this.quiet = 0;
                    let text = format!("retry: 2000\nevent: update\ndata: {parts}\n\n");
                    this.last = parts;
                    text
                }
            };
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))));
        }
    }
}

/// Logs where the web view is.
pub fn announce(addr: SocketAddr) {
    info!("web view at http://{addr}/");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_forms() {
        assert_eq!(decode("a%2Fb%20c", false).as_deref(), Some("a/b c"));
        assert_eq!(decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("%zz", false), None);
        assert_eq!(decode("%e2%82", false), None, "not UTF-8");
        let f = form("secret=s%26x&next=%2Fgroup%2Fg");
        assert_eq!(value(&f, "secret"), Some("s&x"));
        assert_eq!(value(&f, "next"), Some("/group/g"));
        assert_eq!(html::encode("g 1/ü"), "g%201%2F%C3%BC");
        assert_eq!(
            decode(&html::encode("g 1/ü"), false).as_deref(),
            Some("g 1/ü")
        );
    }

    #[test]
    fn a_login_sends_the_browser_only_to_our_own_pages() {
        assert_eq!(local_path("/group/g"), "/group/g");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil"), "/");
    }
}
