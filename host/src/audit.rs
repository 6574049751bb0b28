//! The audit log: one line for each change of who may do what, or of the
//! cluster itself, with who asked and what came of it: tokens, ACLs,
//! plugins, membership, sessions closed by an operator, imports, and
//! authentication over the ZooKeeper port.
//!
//! Lines go to the log under the target `audit` (`RUST_LOG=audit=info`
//! keeps only them). Every value a client chose is written with Rust's
//! escaping (`"evil\nname"`), so a token name or plugin name holding a
//! newline or a terminal escape cannot forge or hide a line
//! (CVE-2026-84439 and -84501 were such injections into ZooKeeper's logs).

/// Records one audited action. `actor` is who asked (`token:ab12… (name)`,
/// `session:0x…`), `object` what it acted on, `outcome` its result.
pub fn record(action: &str, actor: &str, object: &str, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => tracing::info!(target: "audit", action, actor = ?actor, object = ?object, "done"),
        Err(why) => tracing::info!(target: "audit", action, actor = ?actor, object = ?object, error = ?why, "refused"),
    }
}
