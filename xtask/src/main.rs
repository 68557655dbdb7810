//! `cargo xtask test`: every test of the project on a fresh Debian machine, in one command.
//!
//! 1. `tests/prepare.sh`: installs what is missing (as root, from Debian's packages and rustup
//!    targets; otherwise it says what to run) and builds the static tools, the test guest and
//!    its disk images, the Debian package and the tools tarballs;
//! 2. `cargo test --workspace --no-fail-fast` with the tests' requirements switched on
//!    (a missing qemu or static tool fails its tests instead of skipping them);
//! 3. a bounded fuzz run of the parser and the state machine, when a nightly toolchain is there;
//! 4. a summary of every test binary, whatever failed before, and the exit status.
//!
//! `cargo test --workspace` stays the fast inner loop on a prepared machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// One test binary's line of the summary.
#[derive(Debug, Default, Clone, PartialEq)]
struct Binary {
    name: String,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// The names of its failed tests.
    failures: Vec<String>,
    /// It never printed its result line (it crashed, or did not build).
    incomplete: bool,
}

/// Reads `cargo test` output line by line into per-binary results.
#[derive(Debug, Default)]
struct Summary {
    binaries: Vec<Binary>,
    /// Errors outside any test binary (a crate that does not compile).
    errors: Vec<String>,
}

impl Summary {
    fn line(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(rest) = line.trim_start().strip_prefix("Running ") {
            // `Running unittests src/main.rs (target/debug/deps/lava_multinode-1234)`
            let name = match (rest.find('('), rest.rfind(')')) {
                (Some(a), Some(b)) if a < b => {
                    let path = &rest[a + 1..b];
                    let file = Path::new(path)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.to_owned());
                    let base = file.rsplit_once('-').map_or(file.as_str(), |(b, _)| b);
                    format!("{base} ({})", rest[..a].trim())
                }
                _ => rest.to_owned(),
            };
            self.binaries.push(Binary {
                name,
                incomplete: true,
                ..Binary::default()
            });
        } else if let Some(rest) = line.trim_start().strip_prefix("Doc-tests ") {
            self.binaries.push(Binary {
                name: format!("{rest} (doc-tests)"),
                incomplete: true,
                ..Binary::default()
            });
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            if let Some(b) = self.binaries.last_mut() {
                b.incomplete = false;
                for part in rest.split(['.', ';']) {
                    let mut words = part.split_whitespace();
                    let (Some(n), Some(what)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let Ok(n) = n.parse::<u64>() else {
                        continue;
                    };
                    match what {
                        "passed" => b.passed = n,
                        "failed" => b.failed = n,
                        "ignored" => b.ignored = n,
                        _ => {}
                    }
                }
            }
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            if let Some(b) = self.binaries.last_mut() {
                b.failures.push(name.to_owned());
            }
        } else if line.starts_with("error: could not compile") || line.starts_with("error[") {
            self.errors.push(line.to_owned());
        }
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.binaries.iter().fold((0, 0, 0), |(p, f, i), b| {
            (
                p + b.passed,
                f + b.failed + u64::from(b.incomplete),
                i + b.ignored,
            )
        })
    }

    fn print(&self) {
        println!("\n==== every test binary ====");
        let width = self
            .binaries
            .iter()
            .map(|b| b.name.len())
            .max()
            .unwrap_or(10);
        for b in &self.binaries {
            let state = if b.incomplete {
                "DID NOT FINISH".to_owned()
            } else if b.failed > 0 {
                format!("FAILED: {}", b.failures.join(", "))
            } else {
                "ok".to_owned()
            };
            println!(
                "{:<width$}  {:>4} passed  {:>3} failed  {:>3} ignored  {state}",
                b.name, b.passed, b.failed, b.ignored
            );
        }
        for e in &self.errors {
            println!("{e}");
        }
        let (passed, failed, ignored) = self.totals();
        println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_owned()
}

/// Runs `cargo test --workspace --no-fail-fast`, echoing its output, into a summary.
fn cargo_test(extra: &[String]) -> std::io::Result<(Summary, bool)> {
    // cargo's own lines (`Running ...`, errors) go to stderr and the tests' to stdout: one
    // pipe for both keeps them in the order they were written.
    let (reader, writer) = std::io::pipe()?;
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .current_dir(root())
        .env("LAVA_MULTINODE_REQUIRE_STATIC", "1")
        .env("LAVA_MULTINODE_REQUIRE_VM", "1")
        .env("LAVA_MULTINODE_REQUIRE_BROWSER", "1")
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = command.spawn()?;
    // This process's copies of the write end must go, or the reader never ends.
    drop(command);
    let mut summary = Summary::default();
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        println!("{line}");
        summary.line(&line);
    }
    let ok = child.wait()?.success();
    Ok((summary, ok))
}

fn run(cmd: &mut Command, what: &str) -> bool {
    match cmd.current_dir(root()).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("xtask: {what} failed ({s})");
            false
        }
        Err(e) => {
            eprintln!("xtask: cannot run {what}: {e}");
            false
        }
    }
}

fn test(extra: &[String]) -> ExitCode {
    if !run(
        Command::new("bash").arg("tests/prepare.sh"),
        "tests/prepare.sh",
    ) {
        eprintln!("xtask: the machine is not prepared (see above); the tests would fail for that");
        return ExitCode::FAILURE;
    }
    let (summary, cargo_ok) = match cargo_test(extra) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xtask: cannot run cargo test: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The fuzz targets need a nightly toolchain; without one they are left out (said so).
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"));
    let mut fuzz_ok = true;
    if nightly {
        let has_fuzz = Command::new("cargo")
            .args(["fuzz", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        fuzz_ok = (has_fuzz
            || run(
                Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
                "cargo install cargo-fuzz",
            ))
            && fuzz(30);
    } else {
        println!("xtask: no nightly toolchain: the fuzz targets were not run");
    }
    summary.print();
    if !fuzz_ok {
        println!("xtask: the fuzz run failed (see above)");
    }
    let (_, failed, _) = summary.totals();
    if cargo_ok && fuzz_ok && failed == 0 && summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The folders of the cargo-fuzz targets: the protocol's (frames, requests) and the
/// coordinator's (the state machine), apart so that `protocol` never imports the coordinator.
const FUZZ_DIRS: [&str; 2] = ["protocol/fuzz", "coordinator/fuzz"];

/// Runs every fuzz target for `seconds` each, from a private copy of its seed corpus (so that
/// a run leaves the checkout clean). Needs nightly and cargo-fuzz.
fn fuzz(seconds: u64) -> bool {
    for dir in FUZZ_DIRS {
        let dir = root().join(dir);
        let listed = Command::new("cargo")
            .args(["+nightly", "fuzz", "list"])
            .current_dir(&dir)
            .output();
        let targets = match listed {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => {
                eprintln!("xtask: cannot list the fuzz targets of {}", dir.display());
                return false;
            }
        };
        for target in targets.split_whitespace() {
            let seeds = dir.join("corpus").join(target);
            let work =
                std::env::temp_dir().join(format!("xtask-fuzz-{target}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&work);
            let copied = std::fs::create_dir_all(&work).and_then(|()| {
                for entry in std::fs::read_dir(&seeds).into_iter().flatten().flatten() {
                    std::fs::copy(entry.path(), work.join(entry.file_name()))?;
                }
                Ok(())
            });
            if let Err(e) = copied {
                eprintln!("xtask: cannot copy the corpus of {target}: {e}");
                return false;
            }
            let status = Command::new("cargo")
                .args(["+nightly", "fuzz", "run", target])
                .arg(&work)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .args(["-max_len=8192", "-timeout=10"])
                .current_dir(&dir)
                .status();
            let ok = status.as_ref().is_ok_and(|s| s.success());
            if !ok {
                eprintln!("xtask: the fuzz target {target} failed: {status:?}");
            }
            let _ = std::fs::remove_dir_all(&work);
            if !ok {
                return false;
            }
        }
    }
    true
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("fuzz") => {
            let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
            if fuzz(seconds) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask test [CARGO TEST ARGS] | cargo xtask fuzz [SECONDS]\n\n\
                 Prepares this machine (tests/prepare.sh: Debian packages as root, the static \
                 tools, the test guest and its disk images, the Debian package) and runs every \
                 test (cargo test --workspace --no-fail-fast, qemu and static tools required), \
                 then a bounded fuzz run when a nightly toolchain is there, and prints a summary \
                 of every test binary. `fuzz` runs every cargo-fuzz target (protocol/fuzz, \
                 coordinator/fuzz) for SECONDS each [60] (nightly and cargo-fuzz needed)."
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_output_becomes_a_summary() {
        let mut s = Summary::default();
        for line in [
            "     Running unittests src/lib.rs (target/debug/deps/lava_protocol-0a1b2c)",
            "test a ... ok",
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "     Running tests/vm_groups.rs (target/debug/deps/vm_groups-99aa)",
            "test qemu_x ... FAILED",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9s",
            "     Running tests/crash.rs (target/debug/deps/crash-77)",
        ] {
            s.line(line);
        }
        assert_eq!(s.binaries.len(), 3);
        assert_eq!(s.binaries[0].name, "lava_protocol (unittests src/lib.rs)");
        assert_eq!((s.binaries[0].passed, s.binaries[0].ignored), (12, 1));
        assert_eq!(s.binaries[1].failures, ["qemu_x"]);
        assert!(s.binaries[2].incomplete);
        assert_eq!(s.totals(), (15, 2, 1));
    }
}
