//! The console transport (`LAVA_MULTINODE_TRANSPORT=console`): the commands speak LAVA's
//! MultiNode API as LAVA's own shell helpers do. Each call is LAVA's marker line
//! (`<LAVA_MULTI_NODE> <LAVA_WAIT ready>`) printed on standard output, and where the call has
//! a reply, the reply is the line the relay (LAVA's dispatcher, or our VM-group launcher)
//! types back on standard input (`<LAVA_WAIT_COMPLETE host:ip=10.0.2.2>`).
//!
//! Formats come from `lava_protocol::console`; this module adds what a tool needs around
//! them: checking that a call can travel in a marker, reading the reply (console echo, noise
//! and other calls' replies skipped) within the timeout, and the group roster from LAVA's
//! `$LAVA_GROUP`. The reply loop ([`read_reply`]) is driven by [`Lines`], so tests feed it
//! text; standard input is read by [`ThreadLines`], one line at a time and unbuffered, so
//! that nothing after the reply is taken from the shell that shares the console.

use std::cell::RefCell;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lava_protocol::console::{parse_reply, unprintable, Call};
use lava_protocol::message::Roles;
use lava_protocol::{Reply, RequestKind};
use serde_json::{Map, Value};

use crate::config::{Config, ConfigError};
use crate::error::Error;

/// Longest wait for the reply to `lava-fail`: LAVA's dispatcher types none.
pub const FAIL_REPLY_WAIT: Duration = Duration::from_secs(10);
/// Longest line kept from the console; the rest of a longer line is dropped.
const MAX_LINE: usize = 1 << 20;

/// What reading one line of the console came to.
#[derive(Debug)]
pub enum Next {
    /// A line, without its line end (`\n` or `\r\n`), invalid UTF-8 replaced.
    Line(String),
    /// The console closed (end of standard input).
    Eof,
    /// The deadline passed first.
    TimedOut,
    Failed(std::io::Error),
}

/// The console's lines, one at a time.
pub trait Lines {
    /// The next line, waiting until `deadline` at most.
    fn next_line(&mut self, deadline: Instant) -> Next;
}

/// Text already at hand (tests): a read never waits, so it never times out.
impl<R: BufRead> Lines for R {
    fn next_line(&mut self, _deadline: Instant) -> Next {
        let mut buf = Vec::new();
        match self.read_until(b'\n', &mut buf) {
            Ok(0) => Next::Eof,
            Ok(_) => Next::Line(line_text(buf)),
            Err(e) => Next::Failed(e),
        }
    }
}

fn line_text(mut bytes: Vec<u8>) -> String {
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one line from an unbuffered source, a byte at a time (so nothing beyond it is
/// consumed); a last line without a line end counts as a line.
fn read_line(source: &mut dyn Read) -> Next {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match source.read(&mut byte) {
            Ok(0) if line.is_empty() => return Next::Eof,
            Ok(0) => return Next::Line(line_text(line)),
            Ok(_) if byte[0] == b'\n' => return Next::Line(line_text(line)),
            Ok(_) => {
                if line.len() < MAX_LINE {
                    line.push(byte[0]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Next::Failed(e),
        }
    }
}

/// A source read by a thread, one line per request, so that the caller can stop waiting at
/// its deadline (a blocked read cannot be interrupted) and the thread reads no line nobody
/// asked for.
pub struct ThreadLines {
    want: mpsc::Sender<()>,
    got: mpsc::Receiver<Next>,
    /// A line was asked for and has not arrived yet (the last wait timed out).
    asked: bool,
}

impl ThreadLines {
    pub fn spawn(mut source: impl Read + Send + 'static) -> ThreadLines {
        let (want, wanted) = mpsc::channel::<()>();
        let (give, got) = mpsc::channel();
        std::thread::spawn(move || {
            while wanted.recv().is_ok() {
                let next = read_line(&mut source);
                let more = matches!(next, Next::Line(_));
                if give.send(next).is_err() || !more {
                    return;
                }
            }
        });
        ThreadLines {
            want,
            got,
            asked: false,
        }
    }

    /// Standard input, unbuffered (a duplicate of descriptor 0: `std::io::stdin()` would read
    /// ahead into its buffer lines that belong to the shell).
    pub fn stdin() -> std::io::Result<ThreadLines> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        Ok(ThreadLines::spawn(std::fs::File::from(fd)))
    }
}

impl Lines for ThreadLines {
    fn next_line(&mut self, deadline: Instant) -> Next {
        if !self.asked {
            if self.want.send(()).is_err() {
                // The thread ended: it reported the end or an error before.
                return Next::Eof;
            }
            self.asked = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.got.recv_timeout(left) {
            Ok(next) => {
                self.asked = false;
                next
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Next::TimedOut,
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Eof,
        }
    }
}

/// What the relay answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The data of a wait (`{sender: {key: value}}`; empty for the others).
    Ok(Value),
    /// LAVA's ` nack`.
    Nack,
}

/// Why no answer came.
#[derive(Debug)]
pub enum NoAnswer {
    Eof,
    TimedOut,
    Failed(std::io::Error),
}

/// Reads lines until the reply to `call` before `deadline`: anything else (the console's
/// echo, noise, escape sequences, the reply to another call) is skipped. `seen` is shown
/// every line read (for `LAVA_MULTINODE_DEBUG`).
pub fn read_reply(
    call: &Call,
    lines: &mut dyn Lines,
    deadline: Instant,
    seen: &mut dyn FnMut(&str),
) -> Result<Answer, NoAnswer> {
    loop {
        if Instant::now() >= deadline {
            return Err(NoAnswer::TimedOut);
        }
        match lines.next_line(deadline) {
            Next::Line(line) => {
                seen(&line);
                match parse_reply(call.api(), &line) {
                    Some(Ok(data)) => return Ok(Answer::Ok(data)),
                    Some(Err(())) => return Ok(Answer::Nack),
                    None => {}
                }
            }
            Next::Eof => return Err(NoAnswer::Eof),
            Next::TimedOut => return Err(NoAnswer::TimedOut),
            Next::Failed(e) => return Err(NoAnswer::Failed(e)),
        }
    }
}

/// Why `text` cannot travel in a marker, if it cannot: `>` ends the marker, `<` starts
/// another, a line break cuts it.
fn unprintable_reason(text: &str) -> Option<String> {
    unprintable(text).map(|c| match c {
        '\n' | '\r' => "a line break".to_owned(),
        c => format!("'{c}'"),
    })
}

fn cannot_travel(what: &str, why: &str) -> Error {
    Error::Usage(format!(
        "{what} cannot travel in a LAVA marker over the console: {why}"
    ))
}

/// A message ID or a role: one word (LAVA's dispatcher splits the marker at whitespace).
fn check_word(what: &str, word: &str) -> Result<(), Error> {
    let what = format!("{what} {word:?}");
    if let Some(why) = unprintable_reason(word) {
        return Err(cannot_travel(&what, &format!("it contains {why}")));
    }
    if word.chars().any(char::is_whitespace) {
        return Err(cannot_travel(&what, "it contains whitespace"));
    }
    if word.is_empty() {
        return Err(cannot_travel(&what, "it is empty"));
    }
    Ok(())
}

/// A `lava-send` pair as LAVA's dispatcher reads it back from the marker: the key is a word
/// (`\w+`, which is where it splits the pairs), the value has no `=` (a pair that does not
/// split into exactly two at `=` is dropped).
fn check_pair(key: &str, value: &str) -> Result<(), Error> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    if key.is_empty() || !key.chars().all(is_word) {
        return Err(cannot_travel(
            &format!("the key {key:?}"),
            "LAVA's dispatcher reads only keys of letters, digits and '_'",
        ));
    }
    let what = format!("the value of {key:?}");
    if let Some(why) = unprintable_reason(value) {
        return Err(cannot_travel(&what, &format!("it contains {why}")));
    }
    if value.contains('=') {
        return Err(cannot_travel(
            &what,
            "it contains '=' (LAVA's dispatcher drops such a pair)",
        ));
    }
    Ok(())
}

/// The marker call of a request, or why it cannot travel (a usage error naming the
/// argument; nothing is altered). Requests outside LAVA's API are an internal error: the
/// commands do not make them over the console.
pub fn marker_call(kind: &RequestKind) -> Result<Call, Error> {
    match kind {
        RequestKind::Send { id, message } => {
            check_word("the message ID", id)?;
            let mut pairs = Map::new();
            for (key, value) in message.as_object().into_iter().flatten() {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                check_pair(key, &text)?;
                pairs.insert(key.clone(), Value::String(text));
            }
            Ok(Call::Send {
                id: id.clone(),
                message: pairs,
            })
        }
        RequestKind::Wait { id } => {
            check_word("the message ID", id)?;
            Ok(Call::Wait { id: id.clone() })
        }
        RequestKind::WaitAll { id, role } => {
            check_word("the message ID", id)?;
            if let Some(role) = role {
                check_word("the role", role)?;
            }
            Ok(Call::WaitAll {
                id: id.clone(),
                role: role.clone(),
            })
        }
        RequestKind::Sync { id, .. } => {
            check_word("the message ID", id)?;
            Ok(Call::Sync { id: id.clone() })
        }
        RequestKind::Fail { reason } => {
            let what = format!("the reason {reason:?}");
            if let Some(why) = unprintable_reason(reason) {
                return Err(cannot_travel(&what, &format!("it contains {why}")));
            }
            if reason.trim().is_empty() {
                return Err(cannot_travel(&what, "it is empty"));
            }
            Ok(Call::Fail {
                reason: reason.trim().to_owned(),
            })
        }
        other => Err(Error::Local(format!(
            "`{}` has no LAVA marker: it cannot be made over the console",
            other.name()
        ))),
    }
}

/// A failure reason as it can travel: in a `lava-send` value (`in_value`, the `reason` of
/// `lava_vm_stop`), runs of whitespace become one space (LAVA's reply lines keep single
/// spaces only) and `=`, `<` and `>` become `_`; in the `<LAVA_FAIL reason>` marker, which
/// is read whole, `<` and `>` become `_`. Failure reports are made to get through, so they
/// are adapted rather than refused; the caller says so when the text changed.
pub fn travelling_reason(reason: &str, in_value: bool) -> String {
    let replace = |text: &str| -> String {
        text.chars()
            .map(|c| match c {
                '<' | '>' => '_',
                '=' if in_value => '_',
                c => c,
            })
            .collect()
    };
    if in_value {
        let words: Vec<String> = reason.split_whitespace().map(replace).collect();
        words.join(" ")
    } else {
        replace(reason.trim())
    }
}

/// The group's roster from LAVA's `$LAVA_GROUP`: one `client<TAB>role` line per member.
/// LAVA's test shell writes it for `printf`, a line break then `\tclient\trole\n` with
/// literal backslash escapes (and a leading TAB); real TABs and line breaks, or spaces
/// between the two names, are read as well.
pub fn lava_group(text: &str) -> Result<Roles, ConfigError> {
    let text = text.replace("\\t", "\t").replace("\\n", "\n");
    let mut roles = Roles::new();
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [] => {}
            [client, role] => {
                roles.insert(client.to_owned(), role.to_owned());
            }
            _ => {
                return Err(ConfigError::Shell(format!(
                    "$LAVA_GROUP holds {line:?}, not a client<TAB>role line"
                )))
            }
        }
    }
    if roles.is_empty() {
        return Err(ConfigError::Shell("$LAVA_GROUP lists no member".into()));
    }
    Ok(roles)
}

/// The console side of a command: prints markers, reads replies.
pub struct Console {
    timeout: Duration,
    start: Instant,
    debug: bool,
    /// Where markers go: standard output (the same stream as the command's own output, so
    /// they stay in order).
    out: RefCell<Box<dyn Write>>,
    /// Where replies come from; standard input is opened at the first reply read (a
    /// `lava-send` reads nothing).
    input: RefCell<Option<Box<dyn Lines>>>,
}

impl Console {
    /// Standard output and input. Only the timeout is needed: markers carry no identity.
    pub fn from_config(cfg: &Config, debug: bool) -> Result<Console, Error> {
        Ok(Console::new(
            cfg.timeout()?,
            debug,
            Box::new(std::io::stdout()),
            None,
        ))
    }

    /// `input`: `None` for standard input.
    pub fn new(
        timeout: Duration,
        debug: bool,
        out: Box<dyn Write>,
        input: Option<Box<dyn Lines>>,
    ) -> Console {
        Console {
            timeout,
            start: Instant::now(),
            debug,
            out: RefCell::new(out),
            input: RefCell::new(input),
        }
    }

    fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.start.elapsed())
    }

    /// Prints the marker of `call` and flushes it.
    fn print(&self, call: &Call) -> Result<String, Error> {
        let marker = call.marker();
        if self.debug {
            eprintln!("> {marker}");
        }
        let mut out = self.out.borrow_mut();
        writeln!(out, "{marker}")
            .and_then(|()| out.flush())
            .map_err(|e| {
                Error::Console(format!("cannot print {marker} on standard output: {e}"))
            })?;
        Ok(marker)
    }

    /// Reads the reply to `call` for `within` at most.
    fn answer(&self, call: &Call, within: Duration) -> Result<Answer, NoAnswer> {
        let deadline = Instant::now() + within;
        let mut input = self.input.borrow_mut();
        if input.is_none() {
            *input = Some(Box::new(ThreadLines::stdin().map_err(NoAnswer::Failed)?));
        }
        let Some(lines) = input.as_mut() else {
            return Err(NoAnswer::Eof);
        };
        let debug = self.debug;
        read_reply(call, lines.as_mut(), deadline, &mut |line| {
            if debug {
                eprintln!("< {line}");
            }
        })
    }

    /// The error of a reply that did not come for a reason other than time.
    fn no_answer(marker: &str, why: NoAnswer) -> Error {
        match why {
            NoAnswer::Eof => Error::Console(format!(
                "the console closed (end of standard input) before the reply to {marker}"
            )),
            NoAnswer::Failed(e) => Error::Console(format!(
                "cannot read the reply to {marker} from standard input: {e}"
            )),
            NoAnswer::TimedOut => Error::Console(format!("no reply to {marker}")),
        }
    }

    /// `lava_send` (printed, no reply: LAVA's dispatcher types none, and a reply line left
    /// unread would be read by the shell as a command), or our `fail` (answered by our
    /// relay only: wait [`FAIL_REPLY_WAIT`] at most).
    pub fn call(&self, kind: RequestKind) -> Result<Reply, Error> {
        let call = marker_call(&kind)?;
        if !matches!(call, Call::Send { .. } | Call::Fail { .. }) {
            return Err(Error::Local(format!(
                "`{}` is not answered at once",
                kind.name()
            )));
        }
        let marker = self.print(&call)?;
        if !call.has_reply() {
            return Ok(Reply::ack());
        }
        let within = self.remaining().min(FAIL_REPLY_WAIT);
        match self.answer(&call, within) {
            Ok(Answer::Ok(_)) => Ok(Reply::ack()),
            Ok(Answer::Nack) => Err(Error::Refused { marker }),
            Err(NoAnswer::TimedOut) => Err(Error::Local(format!(
                "no relay answered LAVA_FAIL within {}: LAVA's dispatcher does not relay \
                 lava-fail, so nobody was told",
                crate::error::secs(within)
            ))),
            Err(why) => Err(Console::no_answer(&marker, why)),
        }
    }

    /// `lava_wait`, `lava_wait_all` or `lava_sync`: the marker, then its reply within the
    /// timeout. The reply's data is the `message` of the returned `ack`.
    pub fn wait(&self, kind: RequestKind, what: &str) -> Result<Reply, Error> {
        let call = marker_call(&kind)?;
        if !matches!(
            call,
            Call::Wait { .. } | Call::WaitAll { .. } | Call::Sync { .. }
        ) {
            return Err(Error::Local(format!(
                "`{}` is answered at once",
                kind.name()
            )));
        }
        let marker = self.print(&call)?;
        match self.answer(&call, self.remaining()) {
            Ok(Answer::Ok(data)) => Ok(match call {
                Call::Sync { .. } => Reply::ack(),
                _ => Reply::ack_message(data),
            }),
            Ok(Answer::Nack) => Err(Error::Refused { marker }),
            Err(NoAnswer::TimedOut) => Err(Error::Timeout {
                what: format!(
                    "{what} (no <LAVA_{}_COMPLETE ...> reply to {marker} on standard input)",
                    call.api()
                ),
                after: self.timeout,
            }),
            Err(why) => Err(Console::no_answer(&marker, why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Cursor;
    use std::rc::Rc;

    fn wait(id: &str) -> Call {
        Call::Wait { id: id.into() }
    }

    fn reply_from(call: &Call, text: &str) -> (Result<Answer, NoAnswer>, Vec<String>) {
        let mut seen = Vec::new();
        let mut lines = Cursor::new(text.as_bytes().to_vec());
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = read_reply(call, &mut lines, deadline, &mut |l| seen.push(l.to_owned()));
        (r, seen)
    }

    #[test]
    fn echo_and_noise_before_the_reply_are_skipped() {
        let text = "lava-wait ready\r\n\
                    <LAVA_MULTI_NODE> <LAVA_WAIT ready>\r\n\
                    [   12.3] random: crng init done\n\
                    \x1b[0m\x1b[?2004l<LAVA_WAIT_COMPLETE host:ip=10.0.2.2 host:motd=hello world>\r\n\
                    \n";
        let (r, seen) = reply_from(&wait("ready"), text);
        assert_eq!(
            r.unwrap(),
            Answer::Ok(json!({"host": {"ip": "10.0.2.2", "motd": "hello world"}}))
        );
        // Nothing after the reply is read.
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn another_calls_reply_is_ignored() {
        let text =
            "<LAVA_WAIT_ALL_COMPLETE a:k=v>\n<LAVA_SYNC_COMPLETE>\n<LAVA_WAIT_COMPLETE b:k=w>\n";
        let (r, _) = reply_from(&wait("m"), text);
        assert_eq!(r.unwrap(), Answer::Ok(json!({"b": {"k": "w"}})));
        let all = Call::WaitAll {
            id: "m".into(),
            role: None,
        };
        let (r, _) = reply_from(&all, text);
        assert_eq!(r.unwrap(), Answer::Ok(json!({"a": {"k": "v"}})));
    }

    #[test]
    fn nack_and_eof() {
        let sync = Call::Sync { id: "s".into() };
        let (r, _) = reply_from(&sync, "noise\n<LAVA_SYNC_COMPLETE nack>\n");
        assert_eq!(r.unwrap(), Answer::Nack);
        let (r, _) = reply_from(&sync, "noise\n<LAVA_WAIT_COMPLETE>\n");
        assert!(matches!(r, Err(NoAnswer::Eof)), "{r:?}");
        let (r, _) = reply_from(&sync, "");
        assert!(matches!(r, Err(NoAnswer::Eof)), "{r:?}");
    }

    /// A source that never has anything to read.
    struct Silent;
    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
    }

    #[test]
    fn timeout_while_the_console_is_silent() {
        let mut lines = ThreadLines::spawn(Silent);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        let r = read_reply(&wait("m"), &mut lines, deadline, &mut |_| {});
        assert!(matches!(r, Err(NoAnswer::TimedOut)), "{r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn thread_lines_read_one_line_at_a_time() {
        let text = "noise\r\n<LAVA_WAIT_COMPLETE a:k=v>\nlast without end";
        let mut lines = ThreadLines::spawn(Cursor::new(text.as_bytes().to_vec()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = read_reply(&wait("m"), &mut lines, deadline, &mut |_| {});
        assert_eq!(r.unwrap(), Answer::Ok(json!({"a": {"k": "v"}})));
        assert!(matches!(lines.next_line(deadline), Next::Line(l) if l == "last without end"));
        assert!(matches!(lines.next_line(deadline), Next::Eof));
        assert!(matches!(lines.next_line(deadline), Next::Eof));
    }

    #[test]
    fn what_cannot_travel_is_refused_naming_it() {
        let send = |id: &str, pairs: Value| {
            marker_call(&RequestKind::Send {
                id: id.into(),
                message: pairs,
            })
        };
        let usage = |r: Result<Call, Error>| match r {
            Err(Error::Usage(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(usage(send("a b", json!({}))).contains("\"a b\""));
        assert!(usage(send("a>", json!({}))).contains("'>'"));
        assert!(usage(send("id", json!({"a-b": "1"}))).contains("\"a-b\""));
        assert!(usage(send("id", json!({"k": "x=y"}))).contains("'='"));
        assert!(usage(send("id", json!({"k": "<b>"}))).contains("'<'"));
        assert!(usage(send("id", json!({"k": "a\nb"}))).contains("line break"));
        let role = marker_call(&RequestKind::WaitAll {
            id: "m".into(),
            role: Some("two words".into()),
        });
        assert!(usage(role).contains("the role \"two words\""));
        assert!(usage(marker_call(&RequestKind::Fail { reason: " ".into() })).contains("empty"));
        // What travels is printed as it is.
        let call = send(
            "ready",
            json!({"ip": "10.0.0.1", "motd": "hello  world", "e": ""}),
        )
        .unwrap();
        assert_eq!(
            call.marker(),
            "<LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.0.1 motd=hello  world e=>"
        );
        assert!(matches!(
            marker_call(&RequestKind::Roster),
            Err(Error::Local(_))
        ));
    }

    #[test]
    fn reasons_are_adapted_to_travel() {
        assert_eq!(
            travelling_reason("  disk\tfull: x=1 <oops>  ", true),
            "disk full: x_1 _oops_"
        );
        assert_eq!(travelling_reason(" x=1  <a> ", false), "x=1  _a_");
        assert_eq!(travelling_reason("disk full", true), "disk full");
    }

    #[test]
    fn lava_group_as_lavas_test_shell_writes_it() {
        let lava = "\n\\tjob.0\\tserver\\n\\tjob.1\\tclient\\n\\tjob.2\\tclient\\n";
        let roles = lava_group(lava).unwrap();
        let pairs: Vec<(&str, &str)> = roles
            .iter()
            .map(|(c, r)| (c.as_str(), r.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("job.0", "server"),
                ("job.1", "client"),
                ("job.2", "client")
            ]
        );
        assert_eq!(lava_group("a\tserver\nb client\n").unwrap().len(), 2);
        assert!(lava_group("a b c\n")
            .unwrap_err()
            .to_string()
            .contains("\"a b c\""));
        assert!(lava_group("\n").is_err());
    }

    /// Collects what the console printed.
    #[derive(Clone, Default)]
    struct Printed(Rc<RefCell<Vec<u8>>>);
    impl Write for Printed {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn console(input: &str, timeout: f64) -> (Console, Printed) {
        let printed = Printed::default();
        let input: Box<dyn Lines> = Box::new(Cursor::new(input.as_bytes().to_vec()));
        let c = Console::new(
            Duration::from_secs_f64(timeout),
            false,
            Box::new(printed.clone()),
            Some(input),
        );
        (c, printed)
    }

    #[test]
    fn calls_print_markers_and_read_replies() {
        let (c, printed) = console(
            "<LAVA_WAIT_ALL_COMPLETE a:k=v b:k=w>\n<LAVA_SYNC_COMPLETE>\n",
            5.0,
        );
        c.call(RequestKind::Send {
            id: "go".into(),
            message: json!({"k": "v"}),
        })
        .unwrap();
        let reply = c
            .wait(
                RequestKind::WaitAll {
                    id: "go".into(),
                    role: Some("server".into()),
                },
                "go",
            )
            .unwrap();
        assert_eq!(
            reply.message,
            Some(json!({"a": {"k": "v"}, "b": {"k": "w"}}))
        );
        c.wait(
            RequestKind::Sync {
                id: "s".into(),
                message: Value::Null,
            },
            "s",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(printed.0.borrow().clone()).unwrap(),
            "<LAVA_MULTI_NODE> <LAVA_SEND go k=v>\n\
             <LAVA_MULTI_NODE> <LAVA_WAIT_ALL go server>\n\
             <LAVA_MULTI_NODE> <LAVA_SYNC s>\n"
        );
        // The console is now closed.
        let err = c
            .wait(RequestKind::Wait { id: "m".into() }, "m")
            .unwrap_err();
        assert!(matches!(err, Error::Console(_)), "{err:?}");
        assert!(err.to_string().contains("console closed"), "{err}");
    }

    #[test]
    fn nack_is_refused_and_fail_needs_a_relay() {
        let (c, _) = console("<LAVA_WAIT_COMPLETE nack>\n", 5.0);
        let err = c
            .wait(RequestKind::Wait { id: "m".into() }, "m")
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_NACK);
        assert!(err.to_string().contains("<LAVA_WAIT m>"), "{err}");

        let (c, _) = console("<LAVA_FAIL_COMPLETE>\n", 5.0);
        c.call(RequestKind::Fail {
            reason: "disk full".into(),
        })
        .unwrap();

        // No relay: LAVA's dispatcher ignores the marker.
        let c = Console::new(
            Duration::from_millis(300),
            false,
            Box::new(Printed::default()),
            Some(Box::new(ThreadLines::spawn(Silent))),
        );
        let err = c
            .call(RequestKind::Fail {
                reason: "disk full".into(),
            })
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_LOCAL);
        assert!(
            err.to_string().contains("no relay answered LAVA_FAIL"),
            "{err}"
        );
    }
}
