//! The host's test shells: test definitions run on this machine with the host's settings
//! (the tools over TCP), their output shown, logged to `LOG_DIR/host.log` and read for
//! results.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::launcher::Shared;
use super::remote::Remote;
use super::results::Collector;
use super::testshell::{self, Shell};

/// Where the host's test shells live: `LOG_DIR/host-lava` on this machine, the run's folder
/// on a host reached over ssh.
pub fn root(shared: &Shared) -> String {
    match &shared.opts.job.host_ssh {
        Some(_) => format!("{}/host-lava", Remote::dir(&shared.opts.group)),
        None => shared.opts.log_dir.join("host-lava").display().to_string(),
    }
}

/// Puts the host's test-shell files in place (there, for a host reached over ssh: with the
/// host's settings in their environment file, since ssh passes no environment).
pub fn prepare(shared: &Shared, shells: &[Shell]) -> Result<(), String> {
    let root = root(shared);
    let role = &shared.opts.job.host_role;
    let mut environment = testshell::lava_identity(&shared.opts.job, role, role, &root);
    match &shared.opts.job.host_ssh {
        None => {
            let files = testshell::files(shells, &root, &environment);
            testshell::write_files(Path::new(&root), &files)
                .map_err(|e| format!("cannot write {root}: {e}"))
        }
        Some(remote) => {
            for (k, v) in shared.host_env() {
                if k != "PATH" {
                    environment.push((k, v));
                }
            }
            environment.push((
                "PATH".into(),
                format!("{}/bin", Remote::dir(&shared.opts.group)),
            ));
            for (rel, text, exec) in testshell::files(shells, &root, &environment) {
                remote.write(&text, &format!("{root}/{rel}"), exec)?;
            }
            Ok(())
        }
    }
}

/// Runs one test shell's definitions in order; a definition that fails (status, or no
/// ENDRUN) is recorded as such and the next one runs.
pub fn run_shell(shared: &Shared, shell: &Shell, collector: &Mutex<Collector>) {
    let root_text = root(shared);
    let log_path = shared.opts.log_dir.join("host.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ok();
    for run in &shell.runs {
        shared.log.say(&format!(
            "host: test definition {} started ({})",
            run.id, run.origin
        ));
        let started = std::time::Instant::now();
        let command = testshell::run_command(&root_text, run);
        let mut cmd = match &shared.opts.job.host_ssh {
            Some(remote) => remote.command(&command),
            None => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(&command)
                    .envs(shared.host_env())
                    .current_dir(Path::new(&root_text));
                c
            }
        };
        let spawned = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                shared.log.say(&format!("host: cannot run {}: {e}", run.id));
                lock(collector).finish_run(&run.id, None);
                continue;
            }
        };
        let what = format!("host test definition {}", run.id);
        shared.running.add_process(child.id(), &what);
        // The action's timeout: past it, the definition is stopped.
        let (done, stopped) = std::sync::mpsc::channel::<()>();
        if let Some(limit) = shell.timeout {
            let pid = child.id();
            let say = format!(
                "host: test definition {} did not end within {} s: stopping it",
                run.id,
                limit.as_secs_f64()
            );
            std::thread::spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit)
                {
                    eprintln!("{say}");
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", &pid.to_string()])
                        .status();
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            // Our own copy of standard output: the launcher's caller holds the lock of
            // `std::io::stdout()` for the whole run.
            let mut stdout = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .ok();
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let mut line = line;
                line.push(b'\n');
                if let Some(stdout) = stdout.as_mut() {
                    let _ = stdout.write_all(&line);
                }
                if let Some(log) = log.as_mut() {
                    let _ = log.write_all(&line);
                }
                let mut c = lock(collector);
                let known = c.results().len();
                c.feed(&line);
                for r in &c.results()[known..] {
                    shared
                        .log
                        .say(&format!("host: {} {}: {}", r.suite, r.case, r.result));
                }
            }
        }
        let status = child.wait().ok().and_then(|s| s.code());
        shared.running.remove(child.id());
        drop(done);
        let mut c = lock(collector);
        c.finish_run(&run.id, status);
        let how = if status == Some(0) && c.ended(&run.id) {
            "finished".to_owned()
        } else {
            format!(
                "stopped early (status {})",
                status.map_or("none".into(), |s| s.to_string())
            )
        };
        shared.log.say(&format!(
            "host: test definition {} {how} after {:.1} s",
            run.id,
            started.elapsed().as_secs_f64()
        ));
    }
}

fn lock(c: &Mutex<Collector>) -> std::sync::MutexGuard<'_, Collector> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}
