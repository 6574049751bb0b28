//! The `corral` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use corral::config::Config;
use corral::server::Node;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "A programmable coordination server that speaks ZooKeeper's protocol",
    after_help = "Exit codes: 0 success, 1 failure, 2 bad usage, 3 not found, 4 conflict, 5 not allowed, 6 unreachable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: corral::cli::Target,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the ZooKeeper client port, the HTTP port, and Raft.
    Serve(ServeArgs),
    /// Load-test any ZooKeeper-protocol server (Corral or Apache ZooKeeper).
    Bench(corral::bench::BenchArgs),
    #[command(flatten)]
    Tree(corral::cli::TreeCommand),
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        cmd: corral::cli::TokenCommand,
    },
    /// The cluster's state, and membership changes.
    Cluster {
        #[command(subcommand)]
        cmd: corral::cli::ClusterCommand,
    },
    /// Wasm plugins: deploy, list, info, rollback, remove, call.
    Plugin {
        #[command(subcommand)]
        cmd: corral::cli::PluginCommand,
    },
    /// Run a local cluster of N nodes on 127.0.0.1, for development.
    DevCluster(corral::devcluster::DevClusterArgs),
}

/// Flags of `corral serve`. Every configuration key can also come from the
/// TOML file or a `CORRAL_<KEY>` environment variable.
#[derive(Args, Serialize)]
struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "CORRAL_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory for the Raft log, the state and snapshots [default: ./corral-data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// ZooKeeper client address [default: 127.0.0.1:2181].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_addr: Option<String>,
    /// Admin HTTP address [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// This member's node id [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<u64>,
    /// Where other members reach this one [default: 127.0.0.1:2888].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_addr: Option<String>,
    /// The members of a new cluster: id=host:port of each one's --raft-addr,
    /// comma-separated. The cluster secret comes from the config file or
    /// CORRAL_CLUSTER_SECRET.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_cluster: Option<Vec<String>>,
    /// Join a running cluster (then `corral cluster add-learner`) instead of
    /// starting one.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    join: bool,
}

fn main() -> ExitCode {
    // Until `serve` can handle them, SIGTERM and SIGINT wait, pending: a
    // stop asked for in a server's first milliseconds is neither lost nor
    // allowed to kill it half-started. Other commands keep the defaults.
    hold_stop_signals(true);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        hold_stop_signals(false);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) => runtime.block_on(async {
            let r = corral::bench::run(args).await?;
            print!("{}", corral::bench::summary(&r));
            Ok(())
        }),
        Command::Tree(cmd) => return exit(runtime.block_on(corral::cli::tree(cli.target, cmd))),
        Command::Token { cmd } => return exit(corral::cli::token(cli.target, cmd)),
        Command::Cluster { cmd } => return exit(corral::cli::cluster(cli.target, cmd)),
        Command::Plugin { cmd } => return exit(corral::cli::plugin(cli.target, cmd)),
        Command::DevCluster(args) => runtime.block_on(corral::devcluster::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit(r: Result<(), corral::cli::CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::from(e.code)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // First of all: from here on SIGTERM and Ctrl-C stop the node cleanly,
    // also while it starts (before, the signal's default action killed it).
    let stop = stop_signal()?;
    tokio::pin!(stop);
    // Now handled: let them through (one that came early is delivered now).
    hold_stop_signals(false);
    let config = Config::load(args.config.as_deref(), &args)?;
    let prometheus =
        corral::http::prometheus_builder().install_recorder().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let http_addr = config.http_addr;
    let mut node = tokio::select! {
        node = Node::open(config) => node?,
        _ = &mut stop => return stopped_while_starting(None).await,
    };
    let http =
        tokio::net::TcpListener::bind(http_addr).await.map_err(|e| anyhow::anyhow!("listening on {http_addr}: {e}"))?;
    let http_local = http.local_addr()?;
    let router = corral::http::router(node.shared.clone(), prometheus);
    let http_task = tokio::spawn(async move { axum::serve(http, router).await });
    let recovered = tokio::select! {
        r = node.recover() => r?,
        _ = &mut stop => return stopped_while_starting(Some(node)).await,
    };
    if let Some(token) = recovered {
        println!("corral: initialized a new cluster; its admin token (shown only now, store it):");
        println!("corral: admin token: {token}");
    }
    let client = node.serve(http_local).await?;
    println!("corral: serving ZooKeeper clients on {client}, HTTP on http://{http_local}");
    let mut console = http_local;
    if console.ip().is_unspecified() {
        console.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    println!("corral: web console on http://{console}/ (log in with a token)");
    tokio::select! {
        _ = &mut stop => {}
        why = node.failed() => {
            // Applying stopped because going on could diverge from the
            // other members: restarting would stop at the same entry.
            if let Some(halt) = node.halted() {
                node.shutdown().await;
                return Err(anyhow::anyhow!("stopped applying the log: {halt}"));
            }
            // Nothing is served without the Raft core: start afresh from
            // the data directory, in a new process image, so that every
            // file and port is released first (openraft#2116 is one cause).
            // Once: a fault that outlives a restart (a disk that keeps
            // failing writes) stops the node rather than loop.
            node.shutdown().await;
            if restarted_recently() {
                return Err(anyhow::anyhow!(
                    "the Raft core failed again within {RESTART_WINDOW_S} s of a restart: {why}; stopping"
                ));
            }
            tracing::error!("the Raft core failed: {why}; restarting this node");
            let err = restart_process();
            return Err(anyhow::anyhow!("restarting after a Raft failure: {err}"));
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    http_task.abort();
    Ok(())
}

/// Marks a process image that [`restart_process`] started, with the time
/// it did (not a `CORRAL_` variable: those are configuration).
const RESTARTED_AT: &str = "RESTARTED_BY_CORRAL_AT_MS";
const RESTART_WINDOW_S: i64 = 60;

/// Did `restart_process` start this process less than a minute ago?
fn restarted_recently() -> bool {
    std::env::var(RESTARTED_AT)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|at| corral::server::now_ms() - at < RESTART_WINDOW_S * 1000)
}

/// Replaces this process with a fresh run of the same command line. Files
/// and sockets are opened close-on-exec, so the new image starts clean.
fn restart_process() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(RESTARTED_AT, corral::server::now_ms().to_string())
            .exec(),
        Err(e) => e,
    }
}

/// Blocks (`true`) or unblocks SIGTERM and SIGINT for the calling thread
/// and the threads it starts afterwards (the runtime's workers are started
/// while they are blocked, so they never take them; the main thread does,
/// once it unblocks them).
fn hold_stop_signals(hold: bool) {
    // SAFETY: a sigset_t is plain data that sigemptyset initialises, and
    // pthread_sigmask only reads it; neither call can fail with these
    // arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let how = if hold { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Resolves at SIGTERM or SIGINT. Both are registered when this is called,
/// not when it is first polled.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A stop asked for while the node was starting: what was opened is closed
/// in order, and the process exits successfully.
async fn stopped_while_starting(node: Option<Node>) -> anyhow::Result<()> {
    tracing::info!("asked to stop while starting; stopping");
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(())
}
