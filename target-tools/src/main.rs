//! `lava-multinode`: the MultiNode helpers (`lava-send`, `lava-wait`, ...) as one static
//! binary, dispatching on the name it is called by (or on its first argument).

mod args;
mod cache;
mod cli;
mod commands;
mod config;
mod console;
mod error;
mod help;
mod link;
#[cfg(feature = "vm-group")]
mod vmgroup;
mod wait;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use cli::{Command, Env};
use error::{Error, EXIT_OK, EXIT_USAGE};

/// Arguments as UTF-8 (the coordinator speaks JSON text).
fn utf8_args(args: Vec<OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
        })
        .collect()
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs the program and returns its exit status.
fn main_inner(argv: Vec<OsString>) -> i32 {
    let program = argv
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lava-multinode".to_owned());
    let argv = match utf8_args(argv.into_iter().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{program}: {e}");
            return EXIT_USAGE;
        }
    };
    let (cmd, rest, name) = match Command::lookup(&program).filter(|c| c.tool_name().is_some()) {
        Some(cmd) => (cmd, &argv[..], program),
        None => {
            let Some(first) = argv.first() else {
                eprintln!("{}", help::main_text());
                return EXIT_USAGE;
            };
            match first.as_str() {
                "-h" | "--help" | "help" => {
                    // A closed pipe (`--help | head`) is no error worth a panic.
                    let _ = writeln!(std::io::stdout(), "{}", help::main_text());
                    return EXIT_OK;
                }
                "-V" | "--version" => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "lava-multinode {}",
                        env!("CARGO_PKG_VERSION")
                    );
                    return EXIT_OK;
                }
                _ => {}
            }
            match Command::lookup(first) {
                Some(cmd) => {
                    let name = cmd
                        .tool_name()
                        .unwrap_or_else(|| format!("{program} {}", cmd.name()));
                    (cmd, &argv[1..], name)
                }
                None => {
                    eprintln!("{program}: unknown command {first:?} (see {program} --help)");
                    return EXIT_USAGE;
                }
            }
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = commands::run(
        cmd,
        rest,
        Env {
            var: &env_var,
            out: &mut out,
        },
    );
    let _ = out.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            match &e {
                Error::Usage(_) => eprintln!("{name}: {e} (see {name} --help)"),
                _ => eprintln!("{name}: {e}"),
            }
            e.exit_code()
        }
    }
}

fn main() {
    std::process::exit(main_inner(std::env::args_os().collect()));
}
