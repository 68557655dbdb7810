//! LAVA's MultiNode API over a console: the markers a test shell prints
//! (`<LAVA_MULTI_NODE> <LAVA_SEND id k=v>`) and the reply lines the dispatcher types back
//! (`<LAVA_WAIT_COMPLETE sender:k=v ...>`), as LAVA 2023.01's shell helpers and dispatcher
//! (`lava_dispatcher/actions/test/multinode.py`) write and read them.
//!
//! Both ends live here so that the relay (the VM-group launcher) and the console transport
//! of the tools cannot disagree. Everything is sans-IO: text in, values out.

use serde_json::{Map, Value};

/// What every marker starts with.
pub const MARKER_PREFIX: &str = "<LAVA_MULTI_NODE>";
/// Longest marker the scanner accepts (a line of the console): longer is garbled input.
pub const MAX_MARKER_BYTES: usize = 64 * 1024;

/// A MultiNode call as a test shell prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `lava-send ID [k=v ...]`: LAVA's dispatcher types no reply.
    Send {
        id: String,
        message: Map<String, Value>,
    },
    Wait {
        id: String,
    },
    /// `lava-wait-all ID [ROLE]`.
    WaitAll {
        id: String,
        role: Option<String>,
    },
    Sync {
        id: String,
    },
    /// Our extension (`lava-fail REASON`): this node failed. Only our relay answers it.
    Fail {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    #[error("unknown MultiNode call <LAVA_{0} ...>")]
    Unknown(String),
    #[error("<LAVA_{api} ...> has no message ID")]
    NoId { api: String },
    #[error("<LAVA_{api} ...> has unexpected arguments {extra:?}")]
    Extra { api: String, extra: String },
    #[error("marker without its closing '>' before the end of the line: {0:?}")]
    Unterminated(String),
    #[error("marker longer than {MAX_MARKER_BYTES} bytes")]
    TooLong,
    #[error("malformed marker {0:?}")]
    Malformed(String),
}

/// Characters a marker cannot carry: `>` ends it, a line break cuts it.
pub fn unprintable(text: &str) -> Option<char> {
    text.chars().find(|c| matches!(c, '>' | '<' | '\n' | '\r'))
}

impl Call {
    /// The API name inside the marker: `SEND`, `WAIT`, `WAIT_ALL`, `SYNC`, `FAIL`.
    pub fn api(&self) -> &'static str {
        match self {
            Call::Send { .. } => "SEND",
            Call::Wait { .. } => "WAIT",
            Call::WaitAll { .. } => "WAIT_ALL",
            Call::Sync { .. } => "SYNC",
            Call::Fail { .. } => "FAIL",
        }
    }

    /// Whether the relay types a reply line (LAVA's dispatcher answers none to a send).
    pub fn has_reply(&self) -> bool {
        !matches!(self, Call::Send { .. })
    }

    /// The marker line as LAVA's helpers print it (without the line end).
    pub fn marker(&self) -> String {
        let args = match self {
            Call::Send { id, message } => {
                let mut text = id.clone();
                for (k, v) in message {
                    text.push(' ');
                    text.push_str(k);
                    text.push('=');
                    text.push_str(&value_text(v));
                }
                text
            }
            Call::Wait { id } | Call::Sync { id } | Call::WaitAll { id, role: None } => id.clone(),
            Call::WaitAll {
                id,
                role: Some(role),
            } => format!("{id} {role}"),
            Call::Fail { reason } => reason.clone(),
        };
        format!("{MARKER_PREFIX} <LAVA_{} {args}>", self.api())
    }

    /// A call from the two groups of LAVA's pattern `<LAVA_(\S+) ([^>]+)>`, split as the
    /// dispatcher splits them.
    pub fn parse(api: &str, params: &str) -> Result<Call, MarkerError> {
        let words: Vec<&str> = params.split_whitespace().collect();
        let no_id = || MarkerError::NoId {
            api: api.to_owned(),
        };
        let extra = |from: usize| MarkerError::Extra {
            api: api.to_owned(),
            extra: words[from..].join(" "),
        };
        let id = || words.first().map(|w| (*w).to_owned()).ok_or_else(no_id);
        match api {
            "SEND" => {
                // re.split(r"\s+(?=\w+(?:=))", params); a part is kept when it splits on
                // "=" into exactly two.
                let parts = split_send(params.trim());
                let id = parts.first().cloned().ok_or_else(no_id)?;
                let mut message = Map::new();
                for part in &parts[1..] {
                    let pieces: Vec<&str> = part.split('=').collect();
                    if let [k, v] = pieces[..] {
                        message.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                }
                Ok(Call::Send { id, message })
            }
            "WAIT" | "SYNC" => {
                let id = id()?;
                if words.len() > 1 {
                    return Err(extra(1));
                }
                Ok(if api == "WAIT" {
                    Call::Wait { id }
                } else {
                    Call::Sync { id }
                })
            }
            "WAIT_ALL" => {
                let id = id()?;
                if words.len() > 2 {
                    return Err(extra(2));
                }
                let role = words.get(1).map(|r| (*r).to_owned());
                Ok(Call::WaitAll { id, role })
            }
            "FAIL" => Ok(Call::Fail {
                reason: params.trim().to_owned(),
            }),
            other => Err(MarkerError::Unknown(other.to_owned())),
        }
    }

    /// The reply line for this call: `ok` carries a wait's data (`{sender: {k: v}}`), `None`
    /// is LAVA's ` nack`.
    pub fn reply_line(&self, ok: Option<&Value>) -> String {
        let mut text = format!("<LAVA_{}_COMPLETE", self.api());
        match ok {
            None => text.push_str(" nack"),
            Some(data) => {
                if matches!(self, Call::Wait { .. } | Call::WaitAll { .. }) {
                    for (sender, pairs) in data.as_object().into_iter().flatten() {
                        for (k, v) in pairs.as_object().into_iter().flatten() {
                            text.push_str(&format!(" {sender}:{k}={}", value_text(v)));
                        }
                    }
                }
            }
        }
        text.push('>');
        text
    }
}

/// A value as Python's `"%s" % value` prints the strings it holds.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `re.split(r"\s+(?=\w+(?:=))", params)`: split at whitespace followed by `word=`.
fn split_send(params: &str) -> Vec<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut parts = vec![String::new()];
    let mut rest = params;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            let after = rest.trim_start();
            let word_len = after.chars().take_while(|&c| is_word(c)).count();
            let key_follows = word_len > 0
                && after
                    .chars()
                    .nth(word_len)
                    .is_some_and(|after_word| after_word == '=');
            if key_follows {
                parts.push(String::new());
                rest = after;
                continue;
            }
        }
        parts.last_mut().expect("never empty").push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts
}

/// What a test shell's side makes of a reply line: `Ok(data)` (`{sender: {k: v}}`, empty
/// for a sync), or `Err(())` for ` nack`. `None`: the line is not the reply to `api`.
pub fn parse_reply(api: &str, line: &str) -> Option<Result<Value, ()>> {
    let head = format!("<LAVA_{api}_COMPLETE");
    let start = line.find(&head)?;
    let rest = &line[start + head.len()..];
    // `<LAVA_WAIT_COMPLETE` must not match `<LAVA_WAIT_ALL_COMPLETE`: the head is followed
    // by a space or the closing '>'.
    if !(rest.starts_with(' ') || rest.starts_with('>')) {
        return None;
    }
    let body = rest.split('>').next().unwrap_or_default().trim();
    if body == "nack" {
        return Some(Err(()));
    }
    Some(Ok(Value::Object(parse_pairs(body))))
}

/// ` a:k=v b:k=v` into `{a: {k: v}, b: {k: v}}`. A word that does not start a new
/// `sender:key=` pair continues the value before it (values may hold single spaces).
fn parse_pairs(body: &str) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    let mut last: Option<(String, String)> = None;
    for word in body.split(' ').filter(|w| !w.is_empty()) {
        let pair = word.split_once(':').and_then(|(sender, kv)| {
            let (k, v) = kv.split_once('=')?;
            (!sender.is_empty() && !k.is_empty()).then_some((sender, k, v))
        });
        match pair {
            Some((sender, k, v)) => {
                let entry = out
                    .entry(sender.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k.to_owned(), Value::String(v.to_owned()));
                }
                last = Some((sender.to_owned(), k.to_owned()));
            }
            None => {
                if let Some((sender, k)) = &last {
                    if let Some(Value::String(v)) = out
                        .get_mut(sender)
                        .and_then(|m| m.as_object_mut())
                        .and_then(|m| m.get_mut(k))
                    {
                        v.push(' ');
                        v.push_str(word);
                    }
                }
            }
        }
    }
    out
}

/// What the scanner found on a console.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Call(Call),
    /// Something that started as a marker but is not one: the text and why.
    Garbled {
        text: String,
        error: MarkerError,
    },
}

/// Finds markers in console output read in arbitrary pieces: a marker may be split across
/// reads, and noise may surround it. A marker ends at its `>`; a line end before that makes
/// it garbled (LAVA's helpers print each marker on one line).
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes since the last line end that may still hold (the start of) a marker.
    line: Vec<u8>,
    /// Too long a line: skip until its end.
    skipping: bool,
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds console output; returns the markers it completes, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Found> {
        let mut found = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.skipping {
                    self.line_end(&mut found);
                }
                self.line.clear();
                self.skipping = false;
                continue;
            }
            if self.skipping {
                continue;
            }
            self.line.push(b);
            if b == b'>' {
                self.close(&mut found);
            }
            if self.line.len() > MAX_MARKER_BYTES {
                if self.marker_start().is_some() {
                    found.push(Found::Garbled {
                        text: self.excerpt(),
                        error: MarkerError::TooLong,
                    });
                }
                self.line.clear();
                self.skipping = true;
            }
        }
        found
    }

    fn marker_start(&self) -> Option<usize> {
        let prefix = MARKER_PREFIX.as_bytes();
        self.line.windows(prefix.len()).position(|w| w == prefix)
    }

    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.line);
        text.chars().take(200).collect()
    }

    /// A '>' arrived: does it close a marker's call?
    fn close(&mut self, found: &mut Vec<Found>) {
        let Some(start) = self.marker_start() else {
            return;
        };
        let after = &self.line[start + MARKER_PREFIX.len()..];
        // The prefix's own '>' just arrived: wait for the call.
        if after.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(after).into_owned();
        let call_text = text.trim_start();
        let Some(inner) = call_text
            .strip_prefix("<LAVA_")
            .and_then(|t| t.strip_suffix('>'))
        else {
            found.push(Found::Garbled {
                text: format!("{MARKER_PREFIX}{text}"),
                error: MarkerError::Malformed(text.clone()),
            });
            self.line.clear();
            return;
        };
        // `<LAVA_(\S+) ([^>]+)>`
        let result = match inner.split_once(char::is_whitespace) {
            Some((api, params)) if !api.is_empty() && !params.trim().is_empty() => {
                Call::parse(api, params)
            }
            _ => Err(MarkerError::Malformed(call_text.to_owned())),
        };
        found.push(match result {
            Ok(call) => Found::Call(call),
            Err(error) => Found::Garbled {
                text: format!("{MARKER_PREFIX} {call_text}"),
                error,
            },
        });
        self.line.clear();
    }

    fn line_end(&mut self, found: &mut Vec<Found>) {
        if let Some(start) = self.marker_start() {
            let text = String::from_utf8_lossy(&self.line[start..]).into_owned();
            found.push(Found::Garbled {
                error: MarkerError::Unterminated(text.clone()),
                text,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(pieces: &[&[u8]]) -> Vec<Found> {
        let mut s = Scanner::new();
        pieces.iter().flat_map(|p| s.feed(p)).collect()
    }

    #[test]
    fn markers_round_trip() {
        let all = [
            Call::Send {
                id: "ready".into(),
                message: json!({"ip": "10.0.2.15", "port": "80"})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
            Call::Send {
                id: "bare".into(),
                message: Map::new(),
            },
            Call::Wait { id: "w".into() },
            Call::WaitAll {
                id: "w".into(),
                role: None,
            },
            Call::WaitAll {
                id: "w".into(),
                role: Some("server".into()),
            },
            Call::Sync { id: "s".into() },
            Call::Fail {
                reason: "disk full".into(),
            },
        ];
        for call in all {
            let line = format!("{}\n", call.marker());
            assert_eq!(calls(&[line.as_bytes()]), [Found::Call(call.clone())]);
        }
    }

    #[test]
    fn send_splits_as_lavas_dispatcher() {
        let Call::Send { id, message } = Call::parse("SEND", "id cmd=a b k=v odd=x=y").unwrap()
        else {
            panic!()
        };
        assert_eq!(id, "id");
        // "odd=x=y" splits into three: LAVA drops it.
        assert_eq!(Value::Object(message), json!({"cmd": "a b", "k": "v"}));
    }

    #[test]
    fn split_and_noisy_markers_are_found() {
        let found = calls(&[
            b"boot noise\r\n$ lava-sync s\r\n<LAVA_MUL",
            b"TI_NODE> <LAVA_SY",
            b"NC s1>\r\n\x1b[6n",
            b"text <LAVA_MULTI_NODE> <LAVA_WAIT_ALL go client> more\n",
        ]);
        assert_eq!(
            found,
            [
                Found::Call(Call::Sync { id: "s1".into() }),
                Found::Call(Call::WaitAll {
                    id: "go".into(),
                    role: Some("client".into())
                })
            ]
        );
    }

    #[test]
    fn garbled_markers_are_reported() {
        let found = calls(&[b"<LAVA_MULTI_NODE> <LAVA_WAIT\nok\n"]);
        assert!(matches!(
            &found[..],
            [Found::Garbled {
                error: MarkerError::Unterminated(_),
                ..
            }]
        ));
        let found = calls(&[b"<LAVA_MULTI_NODE> <LAVA_BOGUS x>\n"]);
        assert!(matches!(
            &found[..],
            [Found::Garbled {
                error: MarkerError::Unknown(_),
                ..
            }]
        ));
        let found = calls(&[b"<LAVA_MULTI_NODE> garbage>\n"]);
        assert!(matches!(&found[..], [Found::Garbled { .. }]));
        let found = calls(&[b"<LAVA_MULTI_NODE> <LAVA_SYNC a b>\n"]);
        assert!(matches!(
            &found[..],
            [Found::Garbled {
                error: MarkerError::Extra { .. },
                ..
            }]
        ));
        let mut long = b"<LAVA_MULTI_NODE> <LAVA_SEND x ".to_vec();
        long.resize(MAX_MARKER_BYTES + 10, b'a');
        long.extend_from_slice(b">\n<LAVA_MULTI_NODE> <LAVA_SYNC s>\n");
        let found = calls(&[&long]);
        assert!(matches!(
            &found[..],
            [
                Found::Garbled {
                    error: MarkerError::TooLong,
                    ..
                },
                Found::Call(Call::Sync { .. })
            ]
        ));
    }

    #[test]
    fn reply_lines_as_the_dispatcher_types_them() {
        let wait = Call::Wait { id: "m".into() };
        let data = json!({"a": {"ip": "1.2.3.4"}, "b": {"k": "v w", "n": 3}});
        assert_eq!(
            wait.reply_line(Some(&data)),
            "<LAVA_WAIT_COMPLETE a:ip=1.2.3.4 b:k=v w b:n=3>"
        );
        assert_eq!(wait.reply_line(None), "<LAVA_WAIT_COMPLETE nack>");
        let sync = Call::Sync { id: "s".into() };
        assert_eq!(sync.reply_line(Some(&json!("s"))), "<LAVA_SYNC_COMPLETE>");
        assert_eq!(sync.reply_line(None), "<LAVA_SYNC_COMPLETE nack>");
        let all = Call::WaitAll {
            id: "m".into(),
            role: None,
        };
        assert_eq!(all.reply_line(Some(&json!({}))), "<LAVA_WAIT_ALL_COMPLETE>");
    }

    #[test]
    fn replies_parse_back() {
        let line = "<LAVA_WAIT_COMPLETE a:ip=1.2.3.4 b:k=v w b:n=3>";
        assert_eq!(
            parse_reply("WAIT", line),
            Some(Ok(
                json!({"a": {"ip": "1.2.3.4"}, "b": {"k": "v w", "n": "3"}})
            ))
        );
        assert_eq!(parse_reply("WAIT_ALL", line), None);
        assert_eq!(parse_reply("WAIT", "<LAVA_WAIT_ALL_COMPLETE a:k=v>"), None);
        assert_eq!(
            parse_reply("SYNC", "\x1b[0m<LAVA_SYNC_COMPLETE>"),
            Some(Ok(json!({})))
        );
        assert_eq!(
            parse_reply("SYNC", "<LAVA_SYNC_COMPLETE nack>"),
            Some(Err(()))
        );
        assert_eq!(parse_reply("SYNC", "lava-sync s"), None);
    }
}
