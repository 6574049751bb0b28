//! Group membership: members are ephemeral children of the group node,
//! named by the member and holding its data, owned by the caller's session.
//!
//! Arguments (JSON):
//! - `{"op": "join", "group": "/groups/workers", "member": "w1", "data": "..."}`
//!   → `{"joined": true, "members": n}`; joining again from the same
//!   session updates the data; a name held by another session is refused.
//! - `{"op": "leave", "group": "...", "member": "w1"}` → `{"members": n}`;
//! - `{"op": "members", "group": "..."}` → `{"members": {"w1": "...", ...}}`.
//!
//! Watchers use kazoo's `ChildrenWatch` (or any children watch) on the
//! group node, unchanged. The group node is a container (its parent must
//! exist), reaped when empty.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Map, Value, json};

pub struct Group;

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

fn count(tree: &impl Write, group: &str) -> Result<usize, String> {
    match tree.children(group) {
        Ok(c) => Ok(c.len()),
        Err(Fault::NoNode) => Ok(0),
        Err(f) => Err(fault(group, f)),
    }
}

impl Recipe for Group {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let group = args["group"].as_str().ok_or("give \"group\", the group's path")?;
        let member = || match args["member"].as_str() {
            Some(m) if !m.is_empty() && !m.contains('/') => Ok(format!("{group}/{m}")),
            _ => Err("give \"member\", a name without '/'".to_string()),
        };
        let out = match args["op"].as_str() {
            Some("join") => {
                let Some(session) = ctx.session else {
                    return Err("a membership is held by a session: call with one".into());
                };
                let me = member()?;
                let data = args["data"].as_str().unwrap_or("").as_bytes();
                match tree.create(group, b"", CreateMode::Container) {
                    Ok(_) | Err(Fault::NodeExists) => {}
                    Err(f) => return Err(fault(group, f)),
                }
                match tree.create(&me, data, CreateMode::Ephemeral) {
                    Ok(_) => {}
                    Err(Fault::NodeExists) => {
                        let stat = tree.exists(&me).map_err(|f| fault(&me, f))?.ok_or("raced")?;
                        if stat.ephemeral_owner != session {
                            return Err(format!("{me} is held by another session"));
                        }
                        tree.set(&me, data, -1).map_err(|f| fault(&me, f))?;
                    }
                    Err(f) => return Err(fault(&me, f)),
                }
                json!({ "joined": true, "members": count(tree, group)? })
            }
            Some("leave") => {
                let me = member()?;
                match tree.delete(&me, -1) {
                    Ok(()) | Err(Fault::NoNode) => {}
                    Err(f) => return Err(fault(&me, f)),
                }
                json!({ "members": count(tree, group)? })
            }
            Some("members") => {
                let mut members = Map::new();
                let names = match tree.children(group) {
                    Ok(c) => c,
                    Err(Fault::NoNode) => Vec::new(),
                    Err(f) => return Err(fault(group, f)),
                };
                for name in names {
                    let p = format!("{group}/{name}");
                    if let Some((data, _)) = tree.get(&p).map_err(|f| fault(&p, f))? {
                        members.insert(name, Value::String(String::from_utf8_lossy(&data).into_owned()));
                    }
                }
                json!({ "members": members })
            }
            _ => return Err("op: join, leave or members".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Group);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    fn call(t: &mut MemTree, session: i64, args: Value) -> Result<Value, String> {
        let ctx = Context { session: Some(session), ..Context::test() };
        Group::call(&ctx, t, args.to_string().as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn join_update_leave() {
        let mut t = MemTree::new();
        let join = |m: &str, d: &str| json!({"op": "join", "group": "/g", "member": m, "data": d});
        assert_eq!(call(&mut t, 1, join("a", "x")).unwrap()["members"], 1);
        // MemTree's ephemerals belong to session 1: session 1 updates,
        // session 2 is refused the name.
        assert_eq!(call(&mut t, 1, join("a", "y")).unwrap()["members"], 1);
        assert!(call(&mut t, 2, join("a", "z")).unwrap_err().contains("another session"));
        assert_eq!(call(&mut t, 1, json!({"op": "members", "group": "/g"})).unwrap()["members"]["a"], "y");
        assert_eq!(call(&mut t, 1, json!({"op": "leave", "group": "/g", "member": "a"})).unwrap()["members"], 0);
    }
}
