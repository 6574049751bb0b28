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
    /// The cluster's state.
    Cluster {
        #[command(subcommand)]
        cmd: corral::cli::ClusterCommand,
    },
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    let config = Config::load(args.config.as_deref(), &args)?;
    let prometheus =
        corral::http::prometheus_builder().install_recorder().map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let http_addr = config.http_addr;
    let mut node = Node::open(config).await?;
    let http =
        tokio::net::TcpListener::bind(http_addr).await.map_err(|e| anyhow::anyhow!("listening on {http_addr}: {e}"))?;
    let http_local = http.local_addr()?;
    let router = corral::http::router(node.shared.clone(), prometheus);
    let http_task = tokio::spawn(async move { axum::serve(http, router).await });
    if let Some(token) = node.recover().await? {
        println!("corral: initialized a new cluster; its admin token (shown only now, store it):");
        println!("corral: admin token: {token}");
    }
    let client = node.serve().await?;
    println!("corral: serving ZooKeeper clients on {client}, HTTP on http://{http_local}");
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    http_task.abort();
    Ok(())
}

async fn wait_for_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
