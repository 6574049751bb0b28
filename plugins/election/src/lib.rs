//! Leader election, held by the caller's session.
//!
//! Candidates are ephemeral sequential children of the election node
//! (`candidate-NNNNNNNNNN`, holding the candidate's id); the oldest leads.
//! A candidate whose session ends drops out, and the next one leads, with
//! no timer in the recipe. Everyone learns of a change through ordinary
//! ZooKeeper watches: a candidate watches the one just ahead of it
//! (`watch` in the answer), an observer watches the election node's
//! children.
//!
//! The election node is created as a container on first use (its parent
//! must exist), and reaped by ZooKeeper once empty.
//!
//! Arguments (JSON):
//! - `{"op": "join", "election": "/elections/db", "id": "host-a"}`: becomes
//!   a candidate as the caller's session, or finds its candidacy, and
//!   answers `{"leader": bool, "node": ..., "leader_id": ..., "watch": ...}`
//!   (`watch` only when not leading). Calling it again only checks.
//! - `{"op": "leader", "election": "/elections/db"}`: the current leader's
//!   id and node, or nulls.
//! - `{"op": "resign", "node": "..."}`: leaves the election.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Value, json};

pub struct Election;

const PREFIX: &str = "candidate-";

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

/// Candidates, oldest first.
fn candidates(tree: &impl Write, election: &str) -> Result<Vec<String>, String> {
    let mut c: Vec<String> = match tree.children(election) {
        Ok(c) => c.into_iter().filter(|n| n.starts_with(PREFIX)).collect(),
        Err(Fault::NoNode) => Vec::new(),
        Err(f) => return Err(fault(election, f)),
    };
    c.sort();
    Ok(c)
}

fn id_of(tree: &impl Write, node: &str) -> Result<Value, String> {
    Ok(match tree.get(node).map_err(|f| fault(node, f))? {
        Some((data, _)) => Value::String(String::from_utf8_lossy(&data).into_owned()),
        None => Value::Null,
    })
}

fn leader(tree: &impl Write, election: &str) -> Result<Value, String> {
    Ok(match candidates(tree, election)?.first() {
        Some(first) => {
            let node = format!("{election}/{first}");
            json!({ "leader_id": id_of(tree, &node)?, "leader_node": node })
        }
        None => json!({ "leader_id": null, "leader_node": null }),
    })
}

fn join(ctx: &Context, tree: &mut impl Write, election: &str, id: &str) -> Result<Value, String> {
    let Some(session) = ctx.session else {
        return Err("a candidacy is held by a session: call with one".into());
    };
    match tree.create(election, b"", CreateMode::Container) {
        Ok(_) | Err(Fault::NodeExists) => {}
        Err(f) => return Err(fault(election, f)),
    }
    let mut names = candidates(tree, election)?;
    let mut mine = None;
    for (i, name) in names.iter().enumerate() {
        let p = format!("{election}/{name}");
        if tree.exists(&p).map_err(|f| fault(&p, f))?.is_some_and(|s| s.ephemeral_owner == session) {
            mine = Some(i);
            break;
        }
    }
    let at = match mine {
        Some(i) => i,
        None => {
            let prefix = format!("{election}/{PREFIX}");
            let p =
                tree.create(&prefix, id.as_bytes(), CreateMode::EphemeralSequential).map_err(|f| fault(election, f))?;
            names.push(p[election.len() + 1..].to_string());
            names.len() - 1
        }
    };
    let node = format!("{election}/{}", names[at]);
    let leader_node = format!("{election}/{}", names[0]);
    let mut out =
        json!({ "leader": at == 0, "node": node, "leader_id": id_of(tree, &leader_node)?, "leader_node": leader_node });
    if at > 0 {
        out["watch"] = Value::String(format!("{election}/{}", names[at - 1]));
    }
    Ok(out)
}

impl Recipe for Election {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let election = || args["election"].as_str().ok_or("give \"election\", the election's path");
        let out = match args["op"].as_str() {
            Some("join") => {
                let id = args["id"].as_str().ok_or("join: give \"id\", the candidate's name")?;
                join(ctx, tree, election()?, id)?
            }
            Some("leader") => leader(tree, election()?)?,
            Some("resign") => {
                let node = args["node"].as_str().ok_or("resign: give \"node\", from join")?;
                match tree.delete(node, -1) {
                    Ok(()) => json!({ "resigned": true }),
                    Err(Fault::NoNode) => json!({ "resigned": false }),
                    Err(f) => return Err(fault(node, f)),
                }
            }
            _ => return Err("op: join, leader or resign".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Election);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    fn call(t: &mut MemTree, session: i64, args: Value) -> Value {
        let ctx = Context { session: Some(session), ..Context::test() };
        serde_json::from_slice(&Election::call(&ctx, t, args.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn the_oldest_candidate_leads() {
        let mut t = MemTree::new();
        let a = call(&mut t, 1, json!({"op": "join", "election": "/e", "id": "a"}));
        assert_eq!((a["leader"].as_bool(), a["leader_id"].as_str()), (Some(true), Some("a")));
        let b = call(&mut t, 2, json!({"op": "join", "election": "/e", "id": "b"}));
        assert_eq!((b["leader"].as_bool(), &b["watch"]), (Some(false), &a["node"]));
        call(&mut t, 1, json!({"op": "resign", "node": a["node"]}));
        assert_eq!(call(&mut t, 2, json!({"op": "leader", "election": "/e"}))["leader_id"], "b");
    }
}
