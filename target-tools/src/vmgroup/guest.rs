//! What happens on one VM's console once it is launched: the console session is driven
//! (`super::session`), the guest's MultiNode calls relayed (`super::relay`), and the VM's
//! plan typed step by step: its `console_commands`, then its test shells (the files
//! delivered, each test definition run), the results read from the output as they come.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lava_protocol::console::Call;

use super::console::{self, Output};
use super::job::{Node, VmSpec};
use super::launcher::{kill_group, Shared, CALL_TIMEOUT};
use super::relay::{self, Relayed};
use super::results::{CaseResult, Collector, Pattern};
use super::session::{Action, ConsoleSession};
use super::testshell::{self, Shell};
use crate::commands::vm;

/// One command the launcher types at the VM's prompt.
#[derive(Debug, Clone)]
pub struct Step {
    pub text: String,
    /// Typed after the command line (a here-document's body), usually empty.
    pub input: String,
    pub kind: StepKind,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// `console_commands[i]`: must end with status 0.
    Command(usize),
    /// Putting the test shells' files in place: must end with status 0.
    Deliver,
    /// Whether the guest has `lava-send`: if not, our tools are delivered first.
    ProbeTools,
    /// A test definition: its status is its result, the VM goes on.
    TestRun(String),
}

/// A VM's steps: its `console_commands`, then its test shells.
pub fn plan(
    spec: &VmSpec,
    root: &str,
    shells: &[Shell],
    environment: &[(String, String)],
    timeout: Duration,
) -> Vec<Step> {
    let mut steps: Vec<Step> = spec
        .console_commands
        .iter()
        .enumerate()
        .map(|(i, c)| Step {
            text: c.clone(),
            input: String::new(),
            kind: StepKind::Command(i),
            timeout,
        })
        .collect();
    if shells.iter().all(|s| s.runs.is_empty()) {
        return steps;
    }
    let files = testshell::files(shells, root, environment);
    steps.push(Step {
        text: "command -v lava-send >/dev/null".into(),
        input: String::new(),
        kind: StepKind::ProbeTools,
        timeout: CALL_TIMEOUT,
    });
    steps.extend(
        testshell::delivery_commands(root, &files)
            .into_iter()
            .map(|text| Step {
                text,
                input: String::new(),
                kind: StepKind::Deliver,
                timeout: CALL_TIMEOUT,
            }),
    );
    for shell in shells {
        for run in &shell.runs {
            steps.push(Step {
                text: testshell::run_command(root, run),
                input: String::new(),
                kind: StepKind::TestRun(run.id.clone()),
                timeout: shell.timeout.unwrap_or(timeout),
            });
        }
    }
    steps
}

/// The steps that type our static tools into the guest under `root/bin` (the environment
/// puts that folder first on PATH), with the binary's path for messages.
fn tools_steps(spec: &VmSpec, root: &str) -> Result<(String, Vec<Step>), String> {
    let arch = super::guest_tools::guest_arch(&spec.device_type);
    let binary = super::guest_tools::find(arch)?;
    let tools = crate::commands::install::tool_names();
    let steps = super::guest_tools::delivery(&binary, root, &tools)?
        .into_iter()
        .map(|(text, input)| Step {
            text,
            input,
            kind: StepKind::Deliver,
            timeout: CALL_TIMEOUT,
        })
        .collect();
    Ok((binary.display().to_string(), steps))
}

/// The parse patterns of a node's test runs, for its collector.
pub fn collector_for(client: &str, shells: &[Shell]) -> Collector {
    let mut c = Collector::new(client);
    for run in shells.iter().flat_map(|s| &s.runs) {
        if let Some(p) = &run.def.pattern {
            if let Ok(p) = Pattern::new(p, run.def.fixupdict.clone()) {
                c.expect_pattern(&run.id, p);
            }
        }
    }
    c
}

/// What happens on a VM's console, for its thread's loop.
enum VmEvent {
    Console(Output),
    Relayed(Relayed),
}

/// How a console session ended.
pub struct Driven {
    /// Why the launcher counts the VM failed, if it does.
    pub failure: Option<String>,
    /// The last bytes of the console, for messages.
    pub last: Vec<u8>,
    pub results: Vec<CaseResult>,
}

/// Everything `drive` needs about the VM.
pub struct Guest<'a> {
    pub shared: &'a Arc<Shared>,
    pub node: &'a Node,
    pub spec: &'a VmSpec,
    /// Where its test shells go in the guest.
    pub root: String,
    pub steps: Vec<Step>,
    pub collector: Collector,
    pub pgid: u32,
    pub launched: Instant,
}

/// Drives a VM's console until it closes: logs every byte (and marks what the launcher
/// types), relays the guest's MultiNode calls, waits for its prompts, logs in, and types its
/// steps. When the last step has ended, reports the VM's end in its name and powers it off
/// (kills its process group); a command that fails, or a prompt that does not come in time,
/// ends it as failed.
pub fn drive(
    g: Guest<'_>,
    mut master: File,
    log: &mut File,
    booted_after: &mut Option<Duration>,
) -> Driven {
    const LAST: usize = 2048;
    let Guest {
        shared,
        node,
        spec,
        root,
        steps,
        mut collector,
        pgid,
        launched,
    } = g;
    let say = |t: &str| shared.log.say(&format!("{}: {t}", node.client));
    let (tx, rx) = mpsc::channel::<VmEvent>();
    let _reader = match master.try_clone() {
        Ok(m) => console::read_into(m, tx.clone(), VmEvent::Console),
        Err(e) => {
            kill_group(pgid);
            return Driven {
                failure: Some(format!("cannot read the console: {e}")),
                last: Vec::new(),
                results: Vec::new(),
            };
        }
    };
    let (calls, call_rx) = mpsc::channel();
    let relay_shared = Arc::clone(shared);
    let (client, role) = (node.client.clone(), node.role.clone());
    // The worker may be blocked in a call when the console closes: it is left to finish.
    let _relay = relay::worker(
        move || relay_shared.session(&client, &role, relay_shared.opts.timeout),
        call_rx,
        tx,
        VmEvent::Relayed,
    );
    let needs_shell = !steps.is_empty() || spec.auto_login.is_some();
    let has_steps = !steps.is_empty();
    let mut session = if needs_shell || !spec.shell_prompt.is_empty() {
        ConsoleSession::new(
            spec.shell_prompt.clone(),
            spec.auto_login.clone(),
            Instant::now(),
            shared.opts.boot_timeout,
        )
    } else {
        ConsoleSession::watch_only()
    };
    let mut steps: VecDeque<Step> = steps.into();
    let mut current: Option<(Step, Instant)> = None;
    let mut delivered_announced = false;
    let mut failure: Option<String> = None;
    let mut last: Vec<u8> = Vec::new();
    // The launcher's own input, marked in the log.
    let typed = |master: &mut File, log: &mut File, text: &str, secret: bool| {
        if let Err(e) = console::type_text(master, text) {
            say(&format!("cannot type on the console: {e}"));
        }
        let shown = if secret { "********" } else { text.trim_end() };
        let _ = writeln!(log, "\n[vm-group typed] {shown}");
    };
    let end_vm = |failure_reason: Option<&str>| {
        let guest = shared.session(&node.client, &node.role, CALL_TIMEOUT);
        if let Err(e) = vm::vm_done(&guest, failure_reason) {
            say(&format!("could not report its end: {e}"));
        }
        kill_group(pgid);
    };
    loop {
        let wait = session
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let mut actions: VecDeque<Action> = match rx.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => session.tick(Instant::now()).into(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(VmEvent::Console(Output::Closed)) => {
                session.close();
                break;
            }
            Ok(VmEvent::Console(Output::Bytes(bytes))) => {
                // A log that cannot be written must not stop the VM.
                let _ = log.write_all(&bytes).and_then(|()| log.flush());
                last.extend_from_slice(&bytes);
                if last.len() > LAST {
                    last.drain(..last.len() - LAST);
                }
                let known = collector.results().len();
                collector.feed(&bytes);
                for r in &collector.results()[known..] {
                    say(&format!("{} {}: {}", r.suite, r.case, r.result));
                }
                session.feed(&bytes, Instant::now()).into()
            }
            Ok(VmEvent::Relayed(done)) => {
                // The guest waits for the reply: type it before anything is logged.
                if let Some(line) = &done.reply {
                    typed(&mut master, log, &format!("{line}\n"), false);
                }
                let what = done.call.marker();
                match (&done.error, &done.call) {
                    (None, _) => say(&format!("relayed {what}")),
                    (Some(e), Call::Send { .. }) => {
                        // LAVA's dispatcher fails the job here: the guest cannot know.
                        let why = format!("the coordinator did not take {what}: {e}");
                        say(&why);
                        failure.get_or_insert(why.clone());
                        end_vm(Some(&why));
                    }
                    (Some(e), _) => say(&format!("{what}: answered nack: {e}")),
                }
                VecDeque::new()
            }
        };
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Type { text, secret } => typed(&mut master, log, &text, secret),
                Action::Relay(call) => {
                    let _ = calls.send(call);
                }
                Action::Garbled { text, error } => say(&format!(
                    "garbled MultiNode marker on the console: {error}: {text:?}"
                )),
                Action::Booted => {
                    let took = launched.elapsed();
                    *booted_after = Some(took);
                    say(&format!("booted: prompt after {:.1} s", took.as_secs_f64()));
                }
                Action::Ready | Action::CommandEnded { .. } => {
                    let status = match &action {
                        Action::CommandEnded { status } => Some(*status),
                        _ => None,
                    };
                    if let Some((step, started)) = current.take() {
                        let took = started.elapsed().as_secs_f64();
                        let status = status.unwrap_or(-1);
                        match &step.kind {
                            StepKind::Command(i) if status == 0 => {
                                say(&format!("console_commands[{i}] passed"))
                            }
                            StepKind::Deliver if status == 0 => {}
                            StepKind::ProbeTools if status == 0 => {}
                            StepKind::ProbeTools => match tools_steps(spec, &root) {
                                Ok(deliver) => {
                                    say(&format!(
                                        "no lava-* tools in the guest: typing in {} ({} steps)",
                                        deliver.0,
                                        deliver.1.len()
                                    ));
                                    for s in deliver.1.into_iter().rev() {
                                        steps.push_front(s);
                                    }
                                }
                                Err(e) => {
                                    let why = format!("the guest has no lava-* tools and {e}");
                                    say(&why);
                                    failure.get_or_insert(why.clone());
                                    end_vm(Some(&why));
                                    steps.clear();
                                    continue;
                                }
                            },
                            StepKind::TestRun(id) => {
                                collector.finish_run(id, Some(status));
                                let how = if status == 0 && collector.ended(id) {
                                    "finished".to_owned()
                                } else {
                                    format!("stopped early (status {status})")
                                };
                                say(&format!("test definition {id} {how} after {took:.1} s"));
                            }
                            kind => {
                                let what = match kind {
                                    StepKind::Command(i) => format!("console_commands[{i}]"),
                                    _ => "putting the test shells in place".to_owned(),
                                };
                                let why =
                                    format!("{what} ended with status {status}: {}", step.text);
                                say(&why);
                                failure.get_or_insert(why.clone());
                                end_vm(Some(&why));
                                steps.clear();
                                continue;
                            }
                        }
                    } else if spec.auto_login.is_some() {
                        say("logged in");
                    }
                    match steps.pop_front() {
                        Some(step) => {
                            match &step.kind {
                                StepKind::Command(i) => {
                                    say(&format!("console_commands[{i}]: {}", step.text))
                                }
                                StepKind::Deliver if !delivered_announced => {
                                    delivered_announced = true;
                                    say("putting its test shells in place");
                                }
                                StepKind::Deliver | StepKind::ProbeTools => {}
                                StepKind::TestRun(id) => {
                                    say(&format!("test definition {id} started"))
                                }
                            }
                            actions.extend(session.run_with_input(
                                &step.text,
                                &step.input,
                                Instant::now(),
                                step.timeout,
                            ));
                            current = Some((step, Instant::now()));
                        }
                        None if has_steps && failure.is_none() => {
                            say("its steps have ended: reporting its end and powering it off");
                            end_vm(None);
                        }
                        None => {}
                    }
                }
                Action::TimedOut { waiting_for } => {
                    let why = match &current {
                        Some((step, _)) => {
                            let what = match &step.kind {
                                StepKind::Command(i) => format!("console_commands[{i}]"),
                                StepKind::Deliver | StepKind::ProbeTools => {
                                    "putting the test shells in place".into()
                                }
                                StepKind::TestRun(id) => format!("test definition {id}"),
                            };

                            format!("{what} did not end within {} s", step.timeout.as_secs_f64())
                        }
                        None => format!(
                            "no {waiting_for} within {} s (boot timeout)",
                            shared.opts.boot_timeout.as_secs_f64()
                        ),
                    };
                    say(&format!("{why}: killing it"));
                    failure.get_or_insert(why);
                    kill_group(pgid);
                }
            }
        }
    }
    // A test definition cut short by the VM's end counts as failed.
    if let Some((
        Step {
            kind: StepKind::TestRun(id),
            ..
        },
        _,
    )) = &current
    {
        collector.finish_run(id, None);
    }
    Driven {
        failure,
        last,
        results: collector.results().to_vec(),
    }
}
