//! A distributed FIFO queue with atomic take.
//!
//! Items are persistent sequential children (`item-NNNNNNNNNN`) of the
//! queue node. On plain ZooKeeper a consumer lists the children, reads the
//! lowest and tries to delete it; every consumer races for the same item,
//! and all but one retry (Curator's tech note 4 advises against queues on
//! ZooKeeper for this). Here `take` finds, reads and deletes the head in
//! one log entry: consumers never collide, each item goes to exactly one
//! of them, and a take costs one round trip.
//!
//! Arguments (JSON):
//! - `{"op": "put", "queue": "/q", "data": "..."}` → `{"item": path}`;
//! - `{"op": "take", "queue": "/q"}` → `{"item": path, "data": "..."}`, or
//!   `{"item": null}` when empty (watch `/q`'s children to learn of more);
//! - `{"op": "size", "queue": "/q"}` → `{"size": n}`.
//!
//! The queue node is a container (its parent must exist).

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Value, json};

pub struct Queue;

const PREFIX: &str = "item-";

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

fn items(tree: &impl Write, queue: &str) -> Result<Vec<String>, String> {
    let mut c: Vec<String> = match tree.children(queue) {
        Ok(c) => c.into_iter().filter(|n| n.starts_with(PREFIX)).collect(),
        Err(Fault::NoNode) => Vec::new(),
        Err(f) => return Err(fault(queue, f)),
    };
    c.sort();
    Ok(c)
}

impl Recipe for Queue {
    fn call(_ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let queue = args["queue"].as_str().ok_or("give \"queue\", the queue's path")?;
        let out = match args["op"].as_str() {
            Some("put") => {
                let data = args["data"].as_str().ok_or("put: give \"data\"")?;
                match tree.create(queue, b"", CreateMode::Container) {
                    Ok(_) | Err(Fault::NodeExists) => {}
                    Err(f) => return Err(fault(queue, f)),
                }
                let item = tree
                    .create(&format!("{queue}/{PREFIX}"), data.as_bytes(), CreateMode::PersistentSequential)
                    .map_err(|f| fault(queue, f))?;
                json!({ "item": item })
            }
            Some("take") => match items(tree, queue)?.first() {
                None => json!({ "item": null }),
                Some(head) => {
                    let p = format!("{queue}/{head}");
                    let (data, stat) = tree.get(&p).map_err(|f| fault(&p, f))?.ok_or("the head vanished")?;
                    tree.delete(&p, stat.version).map_err(|f| fault(&p, f))?;
                    json!({ "item": p, "data": String::from_utf8_lossy(&data) })
                }
            },
            Some("size") => json!({ "size": items(tree, queue)?.len() }),
            _ => return Err("op: put, take or size".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Queue);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    fn call(t: &mut MemTree, args: Value) -> Value {
        serde_json::from_slice(&Queue::call(&Context::test(), t, args.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn first_in_first_out() {
        let mut t = MemTree::new();
        for d in ["a", "b", "c"] {
            call(&mut t, json!({"op": "put", "queue": "/q", "data": d}));
        }
        assert_eq!(call(&mut t, json!({"op": "size", "queue": "/q"}))["size"], 3);
        for d in ["a", "b", "c"] {
            assert_eq!(call(&mut t, json!({"op": "take", "queue": "/q"}))["data"], d);
        }
        assert_eq!(call(&mut t, json!({"op": "take", "queue": "/q"}))["item"], Value::Null);
    }
}
