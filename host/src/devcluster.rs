//! `corral dev-cluster`: N local members on 127.0.0.1, one child process
//! each, for development and failure experiments.
//!
//! Node `i` (1-based) listens on client port `client_port + i - 1`, Raft port
//! `raft_port + i - 1` and HTTP port `http_port + i - 1`, keeps its data in
//! `<dir>/node-<i>` and logs to `<dir>/node-<i>.log`. A random cluster
//! secret and admin token are made once and kept in `<dir>/dev-cluster.env`,
//! so a restart of the helper, or of one node by hand, finds the same
//! cluster.

use std::path::PathBuf;
use std::process::Stdio;

use clap::Args;

#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// How many members (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Where the members keep their data and logs.
    #[arg(long, default_value = "./corral-dev")]
    pub dir: PathBuf,
    /// Client port of node 1; node i gets this + i - 1.
    #[arg(long, default_value_t = 2181)]
    pub client_port: u16,
    /// Raft port of node 1.
    #[arg(long, default_value_t = 2888)]
    pub raft_port: u16,
    /// HTTP port of node 1.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
}

/// The secret and token of a dev cluster, made on first start.
fn credentials(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let path = dir.join("dev-cluster.env");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k).map(str::to_owned));
        if let (Some(secret), Some(token)) = (get("CORRAL_CLUSTER_SECRET="), get("CORRAL_INITIAL_ADMIN_TOKEN=")) {
            return Ok((secret, token));
        }
    }
    let hex = |b: [u8; 24]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (secret, token) = (hex(rand::random()), format!("corral_dev_{}", hex(rand::random())));
    std::fs::write(&path, format!("CORRAL_CLUSTER_SECRET={secret}\nCORRAL_INITIAL_ADMIN_TOKEN={token}\n"))?;
    Ok((secret, token))
}

pub async fn run(a: DevClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&a.nodes), "--nodes must be between 1 and 9");
    std::fs::create_dir_all(&a.dir)?;
    let dir = a.dir.canonicalize()?;
    let (secret, token) = credentials(&dir)?;
    let exe = std::env::current_exe()?;
    let port = |base: u16, i: u64| base + (i - 1) as u16;
    let members: Vec<String> = (1..=a.nodes).map(|i| format!("{i}=127.0.0.1:{}", port(a.raft_port, i))).collect();
    let mut children = Vec::new();
    for i in 1..=a.nodes {
        let log = std::fs::File::create(dir.join(format!("node-{i}.log")))?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .args(["--node-id", &i.to_string()])
            .arg("--data-dir")
            .arg(dir.join(format!("node-{i}")))
            .args(["--client-addr", &format!("127.0.0.1:{}", port(a.client_port, i))])
            .args(["--raft-addr", &format!("127.0.0.1:{}", port(a.raft_port, i))])
            .args(["--http-addr", &format!("127.0.0.1:{}", port(a.http_port, i))])
            .args(["--initial-cluster", &members.join(",")])
            .env("CORRAL_CLUSTER_SECRET", &secret)
            .env("CORRAL_INITIAL_ADMIN_TOKEN", &token)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        children.push((i, child));
    }
    let connect: Vec<String> = (1..=a.nodes).map(|i| format!("127.0.0.1:{}", port(a.client_port, i))).collect();
    println!("corral dev-cluster: {} members, data and logs in {}", a.nodes, dir.display());
    println!("  ZooKeeper connect string: {}", connect.join(","));
    for i in 1..=a.nodes {
        println!("  node {i}: admin API http://127.0.0.1:{}", port(a.http_port, i));
    }
    println!("  admin token: {token}");
    println!("  try: corral --api http://127.0.0.1:{} --token {token} cluster status", a.http_port);
    println!("  (Ctrl-C stops every member)");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut running = children.len();
    loop {
        let exited = async {
            for (i, c) in children.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Some((*i, status));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            None
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            gone = exited => if let Some((i, status)) = gone {
                println!("corral dev-cluster: node {i} exited ({status}); see node-{i}.log");
                children.retain(|(j, _)| *j != i);
                running -= 1;
                if running == 0 {
                    anyhow::bail!("every member exited");
                }
            },
        }
    }
    for (_, c) in children.iter_mut() {
        if let Some(pid) = c.id() {
            // SIGTERM: a clean shutdown.
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait().await;
    }
    Ok(())
}
