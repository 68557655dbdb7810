//! A VM's console as a two-way session, sans IO: console output and the time go in; what to
//! type, what to relay to the coordinator and what happened come out. The launcher's VM
//! thread does the reading, writing and relaying (`super::console_io`); tests drive this
//! value directly.
//!
//! Steps: boot (until the login prompt, or the shell prompt without `auto_login`), log in
//! (user name, password), then idle at the shell prompt, where commands can be typed: each
//! is followed on its line by `echo "<LAVA_CMD_END_N:$?>"`, whose output (not its echo,
//! which shows `$?`) ends the command with its status. Throughout, LAVA's MultiNode markers
//! are found in the output and handed out to be relayed.

use std::time::{Duration, Instant};

use lava_protocol::console::{Call, Found, MarkerError, Scanner};

/// Prompts that show a shell when the job names none: root's and a user's, as most shells
/// print them (`root@host:~# `, `/ # `, `$ `).
pub const DEFAULT_PROMPTS: [&str; 2] = ["# ", "$ "];

/// How the launcher logs in on a console (LAVA v2's `auto_login`).
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub login_prompt: String,
    pub username: String,
    pub password_prompt: Option<String>,
    pub password: Option<String>,
}

/// What the session is waiting for.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// The login prompt (with `auto_login`), else a shell prompt.
    Boot,
    Password,
    /// A shell prompt after logging in.
    Shell,
    Idle,
    /// A typed command, until its end line.
    Command {
        tag: String,
    },
    /// The console ended or the session gave up.
    Over,
}

/// What the driver must do or know.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Type this on the console; `secret` text must not be logged.
    Type { text: String, secret: bool },
    /// Relay this MultiNode call; type the reply line it gets, if it has one.
    Relay(Call),
    /// Marker-like output that is not a valid call: log it (the guest's tool times out).
    Garbled { text: String, error: MarkerError },
    /// The first prompt (login or shell) appeared.
    Booted,
    /// A shell prompt is there: commands can be typed.
    Ready,
    /// The typed command ended with this status.
    CommandEnded { status: i32 },
    /// What the session waited for did not come in time.
    TimedOut { waiting_for: String },
}

#[derive(Debug)]
pub struct ConsoleSession {
    prompts: Vec<String>,
    login: Option<Login>,
    step: Step,
    /// Output since the last match, bounded: where prompts and end lines are looked for.
    pending: Vec<u8>,
    scanner: Scanner,
    deadline: Option<Instant>,
    booted: bool,
    commands: u32,
}

/// Output kept for matching beyond the longest pattern (a prompt may follow a long line).
const PENDING_MAX: usize = 16 * 1024;

impl ConsoleSession {
    /// A session waiting for its VM to boot within `boot_timeout`. `prompts` empty: the
    /// default ones.
    pub fn new(
        prompts: Vec<String>,
        login: Option<Login>,
        now: Instant,
        boot_timeout: Duration,
    ) -> ConsoleSession {
        let prompts = if prompts.is_empty() {
            DEFAULT_PROMPTS.iter().map(|p| (*p).to_owned()).collect()
        } else {
            prompts
        };
        ConsoleSession {
            prompts,
            login,
            step: Step::Boot,
            pending: Vec::new(),
            scanner: Scanner::new(),
            deadline: Some(now + boot_timeout),
            booted: false,
            commands: 0,
        }
    }

    /// A session that only watches the console for markers (no prompt, no login, no
    /// deadline): for VMs whose guests run their tests by themselves.
    pub fn watch_only() -> ConsoleSession {
        ConsoleSession {
            prompts: Vec::new(),
            login: None,
            step: Step::Idle,
            pending: Vec::new(),
            scanner: Scanner::new(),
            deadline: None,
            booted: false,
            commands: 0,
        }
    }

    /// When `tick` must be called next, if the session waits for something.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_idle(&self) -> bool {
        self.step == Step::Idle
    }

    /// What the session waits for, for messages ("no {waiting_for} within ...").
    pub fn waiting_for(&self) -> String {
        let prompts = || match &self.prompts[..] {
            [one] => format!("shell prompt {one:?}"),
            many => format!("shell prompt (one of {many:?})"),
        };
        match (&self.step, &self.login) {
            (Step::Boot, Some(l)) => format!("login prompt {:?}", l.login_prompt),
            (Step::Boot, None) | (Step::Shell, _) => prompts(),
            (Step::Password, l) => format!(
                "password prompt {:?}",
                l.as_ref()
                    .and_then(|l| l.password_prompt.as_deref())
                    .unwrap_or_default()
            ),
            (Step::Command { .. }, _) => "end of the command".into(),
            (Step::Idle | Step::Over, _) => "nothing".into(),
        }
    }

    /// Types `command` at the shell prompt; its end comes as `CommandEnded` within
    /// `timeout`. Only when idle.
    #[cfg(test)]
    pub fn run(&mut self, command: &str, now: Instant, timeout: Duration) -> Vec<Action> {
        self.run_with_input(command, "", now, timeout)
    }

    /// Like `run`, with `input` typed after the command line: the body of a here-document
    /// the command line opens (`cat >> F <<'EOF'`), ending with its terminator line.
    pub fn run_with_input(
        &mut self,
        command: &str,
        input: &str,
        now: Instant,
        timeout: Duration,
    ) -> Vec<Action> {
        debug_assert!(self.is_idle(), "run() while {:?}", self.step);
        self.commands += 1;
        let tag = format!("<LAVA_CMD_END_{}:", self.commands);
        // One line, so that a command reading standard input (a console-transport tool)
        // cannot eat the end line; `$?` keeps the echo from matching.
        let text = format!("{command}; echo \"{tag}$?>\"\n{input}");
        self.step = Step::Command { tag };
        self.pending.clear();
        self.deadline = Some(now + timeout);
        vec![Action::Type {
            text,
            secret: false,
        }]
    }

    /// The console closed (the VM's process ended).
    pub fn close(&mut self) {
        self.step = Step::Over;
        self.deadline = None;
    }

    /// Time passed: past the deadline, the session gives up on what it waited for.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(d) if now >= d => {
                let waiting_for = self.waiting_for();
                self.close();
                vec![Action::TimedOut { waiting_for }]
            }
            _ => Vec::new(),
        }
    }

    /// Console output.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Vec<Action> {
        let mut out: Vec<Action> = self
            .scanner
            .feed(bytes)
            .into_iter()
            .map(|f| match f {
                Found::Call(call) => Action::Relay(call),
                Found::Garbled { text, error } => Action::Garbled { text, error },
            })
            .collect();
        if matches!(self.step, Step::Idle | Step::Over) {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        // Each match consumes the output up to it; several steps may pass in one piece.
        while let Some(step_out) = self.advance(now) {
            out.extend(step_out);
        }
        if self.pending.len() > PENDING_MAX {
            self.pending.drain(..self.pending.len() - PENDING_MAX);
        }
        out
    }

    /// Finds what the current step waits for in `pending`; on a match, moves on.
    fn advance(&mut self, now: Instant) -> Option<Vec<Action>> {
        let mut out = Vec::new();
        match self.step.clone() {
            Step::Boot => {
                if let Some(login) = self.login.clone() {
                    self.consume(&login.login_prompt)?;
                    self.boot_seen(&mut out);
                    out.push(Action::Type {
                        text: format!("{}\n", login.username),
                        secret: false,
                    });
                    self.step = match login.password_prompt {
                        Some(_) => Step::Password,
                        None => Step::Shell,
                    };
                } else {
                    self.consume_prompt()?;
                    self.boot_seen(&mut out);
                    self.ready(&mut out);
                }
            }
            Step::Password => {
                let login = self.login.clone()?;
                self.consume(login.password_prompt.as_deref().unwrap_or_default())?;
                out.push(Action::Type {
                    text: format!("{}\n", login.password.unwrap_or_default()),
                    secret: true,
                });
                self.step = Step::Shell;
            }
            Step::Shell => {
                self.consume_prompt()?;
                self.ready(&mut out);
            }
            Step::Command { tag } => {
                let status = self.command_end(&tag)?;
                self.step = Step::Idle;
                self.deadline = None;
                out.push(Action::CommandEnded { status });
                let _ = now;
            }
            Step::Idle | Step::Over => return None,
        }
        Some(out)
    }

    fn boot_seen(&mut self, out: &mut Vec<Action>) {
        if !self.booted {
            self.booted = true;
            out.push(Action::Booted);
        }
    }

    fn ready(&mut self, out: &mut Vec<Action>) {
        self.step = Step::Idle;
        self.deadline = None;
        self.pending.clear();
        out.push(Action::Ready);
    }

    fn consume_prompt(&mut self) -> Option<()> {
        let end = earliest_end(&self.pending, self.prompts.iter().map(String::as_str))?;
        self.pending.drain(..end);
        Some(())
    }

    /// Drops `pending` up to the end of `pattern`, if it is there.
    fn consume(&mut self, pattern: &str) -> Option<()> {
        let end = earliest_end(&self.pending, [pattern])?;
        self.pending.drain(..end);
        Some(())
    }

    /// `<LAVA_CMD_END_N:STATUS>` in `pending`: the status.
    fn command_end(&mut self, tag: &str) -> Option<i32> {
        let mut from = 0;
        while let Some(at) = find(&self.pending[from..], tag.as_bytes()) {
            let start = from + at + tag.len();
            let rest = &self.pending[start..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 && rest.get(digits) == Some(&b'>') {
                let status = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(-1);
                self.pending.drain(..start + digits + 1);
                return Some(status);
            }
            from = start;
        }
        None
    }
}

/// Where the earliest of `patterns` found in `haystack` ends.
fn earliest_end<'a>(haystack: &[u8], patterns: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    patterns
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter_map(|p| find(haystack, p.as_bytes()).map(|at| at + p.len()))
        .min()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Duration = Duration::from_secs(60);

    fn typed(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Type { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn boots_to_the_shell_prompt_and_runs_commands() {
        let t = Instant::now();
        let mut s = ConsoleSession::new(vec!["lava-guest# ".into()], None, t, BOOT);
        assert!(s.feed(b"[    0.1] Linux version\r\nlava-gu", t).is_empty());
        let a = s.feed(b"est# \x1b[6n", t);
        assert_eq!(a, [Action::Booted, Action::Ready]);
        assert!(s.is_idle());

        let a = s.run("false", t, BOOT);
        assert_eq!(typed(&a), ["false; echo \"<LAVA_CMD_END_1:$?>\"\n"]);
        // The echo of the typed line does not end it; the output does.
        assert!(s
            .feed(b"false; echo \"<LAVA_CMD_END_1:$?>\"\r\n", t)
            .is_empty());
        assert_eq!(
            s.feed(b"<LAVA_CMD_END_1:1>\r\nlava-guest# ", t),
            [Action::CommandEnded { status: 1 }]
        );
        s.run("true", t, BOOT);
        assert_eq!(
            s.feed(b"<LAVA_CMD_END_1:0>\n<LAVA_CMD_END_2:", t),
            [],
            "an earlier command's tag and a split end line wait"
        );
        assert_eq!(s.feed(b"0>\n", t), [Action::CommandEnded { status: 0 }]);
    }

    #[test]
    fn logs_in_with_user_and_password() {
        let t = Instant::now();
        let login = Login {
            login_prompt: "login:".into(),
            username: "root".into(),
            password_prompt: Some("Password:".into()),
            password: Some("lava".into()),
        };
        let mut s = ConsoleSession::new(vec![], Some(login), t, BOOT);
        assert_eq!(s.waiting_for(), "login prompt \"login:\"");
        let a = s.feed(b"Debian GNU/Linux 12 guest ttyS0\r\n\r\nguest login: ", t);
        assert_eq!(a[0], Action::Booted);
        assert_eq!(typed(&a), ["root\n"]);
        let a = s.feed(b"root\r\nPassword: ", t);
        assert_eq!(
            a,
            [Action::Type {
                text: "lava\n".into(),
                secret: true
            }]
        );
        // Default prompts.
        assert_eq!(s.feed(b"\r\nroot@guest:~# ", t), [Action::Ready]);
    }

    #[test]
    fn markers_are_relayed_in_every_step() {
        let t = Instant::now();
        let mut s = ConsoleSession::new(vec!["$ ".into()], None, t, BOOT);
        let a = s.feed(b"<LAVA_MULTI_NODE> <LAVA_SYNC boot>\n$ ", t);
        assert_eq!(
            a,
            [
                Action::Relay(Call::Sync { id: "boot".into() }),
                Action::Booted,
                Action::Ready
            ]
        );
        let a = s.feed(b"<LAVA_MULTI_NODE> <LAVA_WAIT x\n", t);
        assert!(matches!(&a[..], [Action::Garbled { .. }]));
    }

    #[test]
    fn waits_end_at_their_deadline() {
        let t = Instant::now();
        let mut s = ConsoleSession::new(vec!["# ".into()], None, t, Duration::from_secs(5));
        assert_eq!(s.deadline(), Some(t + Duration::from_secs(5)));
        assert!(s.tick(t + Duration::from_secs(4)).is_empty());
        assert_eq!(
            s.tick(t + Duration::from_secs(5)),
            [Action::TimedOut {
                waiting_for: "shell prompt \"# \"".into()
            }]
        );
        assert_eq!(s.deadline(), None);
    }
}
