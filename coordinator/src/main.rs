use std::fs::OpenOptions;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;
use lava_coordinator::config::{Cli, Command, LogLevel, Settings};
use lava_coordinator::diagnose;
use lava_coordinator::server::{self, Shared};
use lava_coordinator::store::Store;
use lava_coordinator::writer::Writer;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn init_logging(cli: &Cli) {
    let level = match cli.loglevel {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    if cli.logfile == "-" {
        builder.with_writer(std::io::stdout).init();
        return;
    }
    match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cli.logfile)
    {
        Ok(file) => builder.with_writer(Mutex::new(file)).init(),
        Err(e) => {
            builder.with_writer(std::io::stderr).init();
            warn!(
                "cannot open log file {}: {e}; logging to standard error",
                cli.logfile
            );
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

/// The address of the coordinator a subcommand asks (`--address`, else the configuration's
/// listen address, 127.0.0.1 for 0.0.0.0) and the lab secret, or the exit status of a
/// configuration that cannot be read.
fn target(
    cli: &Cli,
    verb: &str,
    address: Option<&str>,
) -> Result<(String, Option<String>), ExitCode> {
    let settings = match Settings::load(&cli.config) {
        Ok(settings) => settings.unwrap_or_default(),
        Err(e) => {
            eprintln!("lava-coordinator {verb}: {e}");
            return Err(ExitCode::from(lava_coordinator::status::UNREACHABLE));
        }
    };
    let address = address.map(str::to_owned).unwrap_or_else(|| {
        let mut addr = settings.listen_addr(cli.listen);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr.to_string()
    });
    Ok((address, settings.access().secret))
}

/// `lava-coordinator unblock|fail|send`: an operator's action, with the lab secret.
fn operate(cli: &Cli, command: &Command) -> ExitCode {
    use lava_protocol::OperatorAction;
    let (address, group, action) = match command {
        Command::Unblock {
            group,
            reason,
            address,
        } => (
            address,
            group,
            OperatorAction::Unblock {
                reason: reason.clone(),
            },
        ),
        Command::Fail {
            group,
            client,
            reason,
            address,
        } => (
            address,
            group,
            OperatorAction::Fail {
                client: client.clone(),
                reason: reason.join(" "),
            },
        ),
        Command::Send {
            group,
            id,
            pairs,
            sender,
            address,
        } => match lava_coordinator::operator::pairs(pairs) {
            Ok(message) => (
                address,
                group,
                OperatorAction::Send {
                    id: id.clone(),
                    message,
                    sender: sender.clone(),
                },
            ),
            Err(e) => {
                eprintln!("lava-coordinator send: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Status { .. } => return ExitCode::FAILURE,
    };
    let (address, secret) = match target(cli, action.name(), address.as_deref()) {
        Ok(target) => target,
        Err(code) => return code,
    };
    ExitCode::from(lava_coordinator::operator::run(
        &address,
        secret.as_deref(),
        group,
        action,
    ))
}

/// `lava-coordinator status`: no logging, no listening.
fn status(
    cli: &Cli,
    address: Option<&str>,
    group: Option<&str>,
    json: bool,
    all: bool,
) -> ExitCode {
    let (address, secret) = match target(cli, "status", address) {
        Ok(target) => target,
        Err(code) => return code,
    };
    ExitCode::from(lava_coordinator::status::run(
        &address,
        group,
        secret.as_deref(),
        json,
        all,
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Status {
        address,
        group,
        json,
        all,
    }) = &cli.command
    {
        return status(&cli, address.as_deref(), group.as_deref(), *json, *all);
    }
    if let Some(command) = &cli.command {
        return operate(&cli, command);
    }
    init_logging(&cli);
    let settings = match Settings::load(&cli.config) {
        Ok(Some(settings)) => {
            info!("configuration loaded from {}", cli.config.display());
            settings
        }
        Ok(None) => {
            info!(
                "no configuration file at {}: using defaults",
                cli.config.display()
            );
            Settings::default()
        }
        Err(e) => {
            error!("{e}");
            eprintln!("lava-coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let (groups, history, writer) = match settings.state_path(cli.state.as_deref()) {
        None => {
            info!("state: in memory only (a restart forgets every group)");
            (Vec::new(), Vec::new(), None)
        }
        Some(path) => {
            let opened = Store::open(&path, settings.state_sync).and_then(|mut store| {
                let groups = store.load(std::time::Instant::now())?;
                let history = store.load_history()?;
                Ok((store, groups, history))
            });
            let (store, groups, history) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    // SQLite's words (`disk I/O error`, `database is locked`) rarely say what
                    // to fix: add what is wrong with the file or its folder, if anything.
                    let e = match diagnose::state_file(&path) {
                        Some(cause) => format!("{e} (cause: {cause})"),
                        None => e.to_string(),
                    };
                    error!("{e}");
                    eprintln!("lava-coordinator: {e}");
                    return ExitCode::from(2);
                }
            };
            info!(
                "state: {} ({} groups restored)",
                path.display(),
                groups.len()
            );
            match Writer::start(store) {
                Ok(writer) => (groups, history, Some(writer)),
                Err(e) => {
                    error!("cannot start the store's thread: {e}");
                    eprintln!("lava-coordinator: cannot start the store's thread: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lava-coordinator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let addr = settings.listen_addr(cli.listen);
        let listener = match server::listen(addr) {
            Ok(l) => l,
            Err(e) => {
                // Say how to choose another address: the likely cause is another coordinator
                // (Debian's, or ours as a service) on the same port.
                let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "; another program listens there (Debian's lava-coordinator or a running \
                     service?): stop it, or choose another address with --listen ADDR:PORT or \
                     the config's listen or port"
                } else {
                    ""
                };
                error!("cannot listen on {addr}: {e}{hint}");
                eprintln!("lava-coordinator: cannot listen on {addr}: {e}{hint}");
                return ExitCode::FAILURE;
            }
        };
        info!(
            "lava-coordinator {} listening on {addr} (block_max {}s, hold_lava_requests {}s, max_connections {}, max_connections_per_address {}, max_inflight_bytes {})",
            env!("CARGO_PKG_VERSION"),
            settings.block_max,
            settings.hold_lava_requests,
            settings.max_connections,
            settings.max_connections_per_address(),
            settings.max_inflight_bytes
        );
        let shutdown = CancellationToken::new();
        let metrics = match cli.metrics.or(settings.metrics_listen) {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    info!("metrics at http://{addr}/metrics");
                    Some(listener)
                }
                Err(e) => {
                    error!("cannot listen for metrics on {addr}: {e}");
                    eprintln!("lava-coordinator: cannot listen for metrics on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        let web = match cli.web.or(settings.web_listen) {
            None => None,
            Some(addr) => match lava_coordinator::web::listen(addr).await {
                Ok(listener) => {
                    lava_coordinator::web::announce(addr);
                    Some(listener)
                }
                Err(e) => {
                    error!("cannot listen for the web view on {addr}: {e}");
                    eprintln!("lava-coordinator: cannot listen for the web view on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        let shared = Shared::new(settings, groups, writer);
        shared.restore_history(history);
        if let Some(listener) = web {
            tokio::spawn(lava_coordinator::web::serve(listener, shared.clone(), shutdown.clone()));
        }
        if let Some(listener) = metrics {
            tokio::spawn(lava_coordinator::metrics::serve(listener, shared.clone(), shutdown.clone()));
        }
        let server = tokio::spawn(server::run(listener, shared, shutdown.clone()));
        shutdown_signal().await;
        shutdown.cancel();
        match server.await {
            Ok(true) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            _ => ExitCode::FAILURE,
        }
    })
}
