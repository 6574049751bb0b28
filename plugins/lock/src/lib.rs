//! A fair mutex and read/write lock, held by the caller's session.
//!
//! The queue is ZooKeeper's classic lock recipe (Curator's
//! `InterProcessMutex`), but each step is one call, applied in the log: the
//! client never sees half a step, and the uncontended case is one round
//! trip. Waiters are ephemeral sequential children of the lock node, so a
//! holder whose session ends releases the lock, and the next in line takes
//! it, with no server-side timer.
//!
//! Arguments (JSON):
//! - `{"op": "acquire", "lock": "/locks/a"}` (or `"mode": "read"` for a
//!   shared lock): joins the queue as the caller's session, or finds its
//!   place if it is already queued, and answers
//!   `{"acquired": true, "node": "/locks/a/write-0000000003"}` or
//!   `{"acquired": false, "node": ..., "waiting_for": "<predecessor>"}`.
//!   A waiter watches `waiting_for` with an ordinary ZooKeeper watch and
//!   calls `acquire` again when it goes: that call only checks.
//! - `{"op": "release", "node": "..."}`: leaves the queue (holder or waiter).
//!
//! The lock node is created as a container on first use: ZooKeeper reaps
//! it once it is empty. The caller must have a session: over the ZooKeeper
//! protocol it always has; over the admin API, pass `?session=`.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Value, json};

pub struct Lock;

const WRITE: &str = "write-";
const READ: &str = "read-";

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

/// The queue, oldest first: (name, is a writer), ordered by sequence number
/// (the last ten digits), whatever the prefix.
fn queue(tree: &impl Write, lock: &str) -> Result<Vec<(String, bool)>, String> {
    let mut q: Vec<(String, bool)> = tree
        .children(lock)
        .map_err(|f| fault(lock, f))?
        .into_iter()
        .filter(|n| n.starts_with(WRITE) || n.starts_with(READ))
        .map(|n| {
            let w = n.starts_with(WRITE);
            (n, w)
        })
        .collect();
    q.sort_by(|a, b| a.0[a.0.len() - 10..].cmp(&b.0[b.0.len() - 10..]));
    Ok(q)
}

fn acquire(ctx: &Context, tree: &mut impl Write, lock: &str, reader: bool) -> Result<Value, String> {
    let Some(session) = ctx.session else {
        return Err("a lock is held by a session: call with one".into());
    };
    match tree.create(lock, b"", CreateMode::Container) {
        Ok(_) | Err(Fault::NodeExists) => {}
        Err(f) => return Err(fault(lock, f)),
    }
    let mut q = queue(tree, lock)?;
    // Already queued (a re-check): find the caller's node.
    let mut mine = None;
    for (i, (name, _)) in q.iter().enumerate() {
        let p = format!("{lock}/{name}");
        if let Some(stat) = tree.exists(&p).map_err(|f| fault(&p, f))?
            && stat.ephemeral_owner == session
        {
            mine = Some(i);
            break;
        }
    }
    let at = match mine {
        Some(i) => i,
        None => {
            let prefix = format!("{lock}/{}", if reader { READ } else { WRITE });
            let p = tree.create(&prefix, b"", CreateMode::EphemeralSequential).map_err(|f| fault(lock, f))?;
            let name = p[lock.len() + 1..].to_string();
            q.push((name, !reader));
            q.len() - 1
        }
    };
    let (name, writer) = &q[at];
    let node = format!("{lock}/{name}");
    // A writer waits for everyone ahead; a reader only for writers ahead.
    let blocker = if *writer { at.checked_sub(1) } else { q[..at].iter().rposition(|(_, w)| *w) };
    Ok(match blocker {
        None => json!({ "acquired": true, "node": node }),
        Some(b) => json!({ "acquired": false, "node": node, "waiting_for": format!("{lock}/{}", q[b].0) }),
    })
}

impl Recipe for Lock {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let out = match args["op"].as_str() {
            Some("acquire") => {
                let lock = args["lock"].as_str().ok_or("acquire: give \"lock\", the lock's path")?;
                let reader = match args["mode"].as_str() {
                    None | Some("write") => false,
                    Some("read") => true,
                    Some(m) => return Err(format!("mode {m:?}: read or write")),
                };
                acquire(ctx, tree, lock, reader)?
            }
            Some("release") => {
                let node = args["node"].as_str().ok_or("release: give \"node\", from acquire")?;
                match tree.delete(node, -1) {
                    Ok(()) => json!({ "released": true }),
                    Err(Fault::NoNode) => json!({ "released": false }),
                    Err(f) => return Err(fault(node, f)),
                }
            }
            _ => return Err("op: acquire or release".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Lock);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    fn call(t: &mut MemTree, session: i64, args: Value) -> Value {
        let ctx = Context { session: Some(session), ..Context::test() };
        serde_json::from_slice(&Lock::call(&ctx, t, args.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn fair_queue_and_shared_readers() {
        let mut t = MemTree::new();
        t.put("/locks", b"");
        let acquire = json!({"op": "acquire", "lock": "/locks/a"});
        let a = call(&mut t, 1, acquire.clone());
        assert_eq!(a["acquired"], true);
        // MemTree's ephemerals all belong to session 1: the re-check finds
        // the same node for session 1.
        assert_eq!(call(&mut t, 1, acquire.clone())["node"], a["node"]);
        let b = call(&mut t, 2, acquire.clone());
        assert_eq!((b["acquired"].as_bool(), &b["waiting_for"]), (Some(false), &a["node"]));
        call(&mut t, 1, json!({"op": "release", "node": a["node"]}));
        let reader = call(&mut t, 3, json!({"op": "acquire", "lock": "/locks/a", "mode": "read"}));
        // The reader queued behind the writer b.
        assert_eq!(reader["waiting_for"], b["node"]);
        let ctx = Context::test();
        assert!(Lock::call(&ctx, &mut t, acquire.to_string().as_bytes()).unwrap_err().contains("session"));
    }
}
