//! `lava-bench`: measures our coordinator side by side with Debian's reference and with a
//! trivial floor server, on loopback. See `docs/BENCHMARKS.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lava_multinode_tests::bench::{self, servers, Options, Part};

/// Benchmarks our lava-coordinator against Debian's lava-coordinator and a trivial server.
#[derive(Debug, Parser)]
#[command(name = "lava-bench", version, about, long_about = None)]
struct Cli {
    /// Our coordinator [default: target/release/lava-coordinator when built, else target/debug].
    #[arg(long, value_name = "PATH")]
    coordinator: Option<PathBuf>,
    /// Debian's reference coordinator (run with python3).
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/lava-coordinator")]
    reference: PathBuf,
    /// Do not measure the reference.
    #[arg(long)]
    no_reference: bool,
    /// The target tools' lava-multinode binary [default: dist/x86_64-unknown-linux-musl/lava-multinode
    /// when present, else target/release/lava-multinode].
    #[arg(long, value_name = "PATH")]
    tools: Option<PathBuf>,
    /// The host's lava-multinode with the VM-group launcher, for the console section (its
    /// tools are the guests'; it also makes that section's TCP calls) [default:
    /// target/release/lava-multinode when built, else target/debug].
    #[arg(long, value_name = "PATH")]
    launcher: Option<PathBuf>,
    /// Calls of each kind in the console section instead of 100.
    #[arg(long, value_name = "N")]
    console_calls: Option<usize>,
    /// A short smoke run (seconds instead of minutes; figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Write the result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress display on stderr.
    #[arg(long)]
    no_progress: bool,
    /// Node counts of the sync rows (comma-separated) instead of 4,16,64,256.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    sync_nodes: Option<Vec<usize>>,
    /// Client counts of the throughput rows (comma-separated) instead of 1,8,64,512.
    #[arg(long, value_delimiter = ',', value_name = "C,...")]
    clients: Option<Vec<usize>>,
    /// Profiling aid: only drive `lava_send` load (the --clients counts, --seconds each)
    /// against a coordinator already listening at ADDR, and print the rates.
    #[arg(long, value_name = "ADDR")]
    against: Option<std::net::SocketAddr>,
    /// Length of each load window of --against, seconds.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    seconds: f64,
    /// Clients shut their write side after each request, as LAVA's client does. Off by
    /// default: then the server closes first and the TIME_WAIT sockets of the run's
    /// connections stay on the server's side, instead of crowding this one client host's
    /// ephemeral ports (which caps even the floor at about 14k connections/s here).
    #[arg(long)]
    half_close: bool,
    /// Instead of the usual run: what a change costs, side by side in one run: this
    /// coordinator binary (say, built from the commit before the change), ours, and ours with
    /// its web view watched; sync latency and lava_send throughput, medians.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bench::net::set_half_close(cli.half_close);
    if let Some(addr) = cli.against {
        for c in cli.clients.unwrap_or_else(|| vec![1, 8, 64, 512]) {
            let w = bench::load::window(
                addr,
                c,
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs_f64(cli.seconds),
            );
            println!(
                "{c} clients: {:.0} req/s, median {:.3} ms, p99 {:.3} ms, {} errors",
                w.rate,
                bench::stats::median(&w.latencies).unwrap_or(0.0),
                bench::stats::p99(&w.latencies).unwrap_or(0.0),
                w.errors.total()
            );
        }
        return ExitCode::SUCCESS;
    }
    let coordinator = cli
        .coordinator
        .unwrap_or_else(|| servers::workspace_binary("lava-coordinator"));
    if !coordinator.exists() {
        eprintln!(
            "lava-bench: {} does not exist: build it with `cargo build --release -p lava-coordinator`, or pass --coordinator",
            coordinator.display()
        );
        return ExitCode::from(2);
    }
    if let Some(baseline) = &cli.baseline {
        return match bench::ab::run(baseline, &coordinator, cli.quick) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lava-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let reference = if cli.no_reference {
        None
    } else if servers::reference_installed(&cli.reference) {
        Some(cli.reference)
    } else {
        eprintln!(
            "lava-bench: note: {} is not installed (`apt-get install lava-coordinator`): the reference is not measured",
            cli.reference.display()
        );
        None
    };
    let tools = cli.tools.or_else(|| {
        let root = lava_multinode_tests::workspace_root();
        [
            root.join("dist/x86_64-unknown-linux-musl/lava-multinode"),
            root.join("target/release/lava-multinode"),
        ]
        .into_iter()
        .find(|p| p.exists())
    });
    let opts = Options {
        coordinator,
        reference,
        tools,
        launcher: cli
            .launcher
            .unwrap_or_else(bench::console::default_launcher),
        quick: cli.quick,
        only: cli.only,
        progress: !cli.no_progress,
        sync_nodes: cli.sync_nodes,
        clients: cli.clients,
        console_calls: cli.console_calls,
        half_close: cli.half_close,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = bench::run(&opts);
    print!("{}", bench::report::table(&report));
    if let Some(path) = cli.json {
        let text = serde_json::to_string_pretty(&report).expect("serialise the report");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("lava-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
