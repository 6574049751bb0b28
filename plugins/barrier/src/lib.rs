//! Barriers: a simple barrier, and ZooKeeper's double barrier, each step one
//! call applied in the log.
//!
//! Simple barrier (`/b` exists while it is closed):
//! - `{"op": "close", "barrier": "/b"}`, `{"op": "open", "barrier": "/b"}`;
//! - `{"op": "wait", "barrier": "/b"}` → `{"open": bool}`: a waiter that
//!   finds it closed sets an exists watch on `/b` and waits for the
//!   deletion.
//!
//! Double barrier of `size` participants (`/b/<id>` ephemerals of the
//! callers' sessions, and `/b/ready` once all have entered):
//! - `{"op": "enter", "barrier": "/b", "size": 3, "id": "w1"}` →
//!   `{"ready": bool, "entered": n}`: the call that brings the count to
//!   `size` creates `/b/ready` in the same entry, so every earlier
//!   participant's exists watch on `/b/ready` fires at once;
//! - `{"op": "leave", "barrier": "/b", "id": "w1"}` → `{"remaining": n}`:
//!   the last to leave deletes `/b/ready` (participants waiting for the
//!   others to leave watch `/b`'s children).
//!
//! `/b` is created as a container (its parent must exist): ZooKeeper reaps
//! it when empty.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Value, json};

pub struct Barrier;

const READY: &str = "ready";

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

fn participants(tree: &impl Write, barrier: &str) -> Result<usize, String> {
    match tree.children(barrier) {
        Ok(c) => Ok(c.iter().filter(|n| *n != READY).count()),
        Err(Fault::NoNode) => Ok(0),
        Err(f) => Err(fault(barrier, f)),
    }
}

fn valid_id(id: &str) -> Result<&str, String> {
    if id.is_empty() || id == READY || id.contains('/') {
        return Err(format!("id {id:?}: a non-empty name without '/', not {READY:?}"));
    }
    Ok(id)
}

impl Recipe for Barrier {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let barrier = args["barrier"].as_str().ok_or("give \"barrier\", the barrier's path")?;
        let out = match args["op"].as_str() {
            Some("close") => match tree.create(barrier, b"", CreateMode::Persistent) {
                Ok(_) | Err(Fault::NodeExists) => json!({ "open": false }),
                Err(f) => return Err(fault(barrier, f)),
            },
            Some("open") => match tree.delete(barrier, -1) {
                Ok(()) | Err(Fault::NoNode) => json!({ "open": true }),
                Err(f) => return Err(fault(barrier, f)),
            },
            Some("wait") => json!({ "open": tree.exists(barrier).map_err(|f| fault(barrier, f))?.is_none() }),
            Some("enter") => {
                if ctx.session.is_none() {
                    return Err("entering a double barrier needs a session".into());
                }
                let size = args["size"].as_u64().filter(|n| *n > 0).ok_or("enter: give \"size\" > 0")? as usize;
                let id = valid_id(args["id"].as_str().ok_or("enter: give \"id\"")?)?;
                match tree.create(barrier, b"", CreateMode::Container) {
                    Ok(_) | Err(Fault::NodeExists) => {}
                    Err(f) => return Err(fault(barrier, f)),
                }
                let me = format!("{barrier}/{id}");
                match tree.create(&me, b"", CreateMode::Ephemeral) {
                    Ok(_) | Err(Fault::NodeExists) => {}
                    Err(f) => return Err(fault(&me, f)),
                }
                let entered = participants(tree, barrier)?;
                let ready_path = format!("{barrier}/{READY}");
                if entered >= size {
                    match tree.create(&ready_path, b"", CreateMode::Persistent) {
                        Ok(_) | Err(Fault::NodeExists) => {}
                        Err(f) => return Err(fault(&ready_path, f)),
                    }
                }
                let ready = tree.exists(&ready_path).map_err(|f| fault(&ready_path, f))?.is_some();
                json!({ "ready": ready, "entered": entered })
            }
            Some("leave") => {
                let id = valid_id(args["id"].as_str().ok_or("leave: give \"id\"")?)?;
                let me = format!("{barrier}/{id}");
                match tree.delete(&me, -1) {
                    Ok(()) | Err(Fault::NoNode) => {}
                    Err(f) => return Err(fault(&me, f)),
                }
                let remaining = participants(tree, barrier)?;
                if remaining == 0 {
                    let ready_path = format!("{barrier}/{READY}");
                    match tree.delete(&ready_path, -1) {
                        Ok(()) | Err(Fault::NoNode) => {}
                        Err(f) => return Err(fault(&ready_path, f)),
                    }
                }
                json!({ "remaining": remaining })
            }
            _ => return Err("op: close, open, wait, enter or leave".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Barrier);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::{MemTree, Read};

    fn call(t: &mut MemTree, args: Value) -> Value {
        let ctx = Context { session: Some(1), ..Context::test() };
        serde_json::from_slice(&Barrier::call(&ctx, t, args.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn double_barrier_opens_on_the_last_entry_and_closes_on_the_last_leave() {
        let mut t = MemTree::new();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let r = call(&mut t, json!({"op": "enter", "barrier": "/b", "size": 3, "id": id}));
            assert_eq!((r["ready"].as_bool(), r["entered"].as_u64()), (Some(i == 2), Some(i as u64 + 1)));
        }
        assert!(t.exists("/b/ready").unwrap().is_some());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let r = call(&mut t, json!({"op": "leave", "barrier": "/b", "id": id}));
            assert_eq!(r["remaining"].as_u64(), Some(2 - i as u64));
        }
        assert!(t.exists("/b/ready").unwrap().is_none());
        assert_eq!(call(&mut t, json!({"op": "close", "barrier": "/s"}))["open"], false);
        assert_eq!(call(&mut t, json!({"op": "wait", "barrier": "/s"}))["open"], false);
        call(&mut t, json!({"op": "open", "barrier": "/s"}));
        assert_eq!(call(&mut t, json!({"op": "wait", "barrier": "/s"}))["open"], true);
    }
}
