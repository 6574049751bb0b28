//! A service registry with health: instances are ephemeral nodes
//! `/services/<service>/<instance>` of the registering session, holding
//! JSON `{"address", "meta", "healthy", "checked_ms"}`. The healthy
//! instances are answered by the `registry-healthy` query, on any member,
//! outside the log.
//!
//! Arguments (JSON):
//! - `{"op": "register", "service": "api", "instance": "i1", "address": "10.0.0.1:80", "meta": {...}}`:
//!   registers (healthy) or, from the same session, updates;
//! - `{"op": "health", "service": "api", "instance": "i1", "healthy": false}`:
//!   records a health check result with the entry's time;
//! - `{"op": "deregister", "service": "api", "instance": "i1"}`.
//!
//! `/services` must exist; each service node is a container, reaped when
//! its last instance goes.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};
use serde_json::{Value, json};

pub struct Registry;

fn fault(path: &str, f: Fault) -> String {
    format!("{path}: {f}")
}

fn name<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    match args[key].as_str() {
        Some(n) if !n.is_empty() && !n.contains('/') => Ok(n),
        _ => Err(format!("give {key:?}, a name without '/'")),
    }
}

impl Recipe for Registry {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let service = format!("/services/{}", name(&args, "service")?);
        let instance = format!("{service}/{}", name(&args, "instance")?);
        let out = match args["op"].as_str() {
            Some("register") => {
                let Some(session) = ctx.session else {
                    return Err("an instance is held by a session: call with one".into());
                };
                let address = args["address"].as_str().ok_or("register: give \"address\"")?;
                let record = json!({ "address": address, "meta": args["meta"].clone(), "healthy": true, "checked_ms": ctx.time_ms });
                let data = record.to_string();
                match tree.create(&service, b"", CreateMode::Container) {
                    Ok(_) | Err(Fault::NodeExists) => {}
                    Err(f) => return Err(fault(&service, f)),
                }
                match tree.create(&instance, data.as_bytes(), CreateMode::Ephemeral) {
                    Ok(_) => {}
                    Err(Fault::NodeExists) => {
                        let stat = tree.exists(&instance).map_err(|f| fault(&instance, f))?.ok_or("raced")?;
                        if stat.ephemeral_owner != session {
                            return Err(format!("{instance} is registered by another session"));
                        }
                        tree.set(&instance, data.as_bytes(), -1).map_err(|f| fault(&instance, f))?;
                    }
                    Err(f) => return Err(fault(&instance, f)),
                }
                json!({ "registered": instance })
            }
            Some("health") => {
                let healthy = args["healthy"].as_bool().ok_or("health: give \"healthy\": true or false")?;
                let (data, stat) = tree
                    .get(&instance)
                    .map_err(|f| fault(&instance, f))?
                    .ok_or(format!("{instance} is not registered"))?;
                let mut record: Value = serde_json::from_slice(&data).map_err(|e| format!("{instance}: {e}"))?;
                record["healthy"] = Value::Bool(healthy);
                record["checked_ms"] = json!(ctx.time_ms);
                tree.set(&instance, record.to_string().as_bytes(), stat.version).map_err(|f| fault(&instance, f))?;
                json!({ "healthy": healthy })
            }
            Some("deregister") => match tree.delete(&instance, -1) {
                Ok(()) => json!({ "deregistered": true }),
                Err(Fault::NoNode) => json!({ "deregistered": false }),
                Err(f) => return Err(fault(&instance, f)),
            },
            _ => return Err("op: register, health or deregister".into()),
        };
        Ok(out.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Registry);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::{MemTree, Read};

    #[test]
    fn register_and_check() {
        let mut t = MemTree::new();
        t.put("/services", b"");
        let ctx = Context { session: Some(1), time_ms: 5, ..Context::test() };
        let reg = json!({"op": "register", "service": "api", "instance": "i1", "address": "a:1"});
        Registry::call(&ctx, &mut t, reg.to_string().as_bytes()).unwrap();
        let health = json!({"op": "health", "service": "api", "instance": "i1", "healthy": false});
        Registry::call(&ctx, &mut t, health.to_string().as_bytes()).unwrap();
        let rec: Value = serde_json::from_slice(&t.get("/services/api/i1").unwrap().unwrap().0).unwrap();
        assert_eq!((rec["healthy"].as_bool(), rec["checked_ms"].as_i64()), (Some(false), Some(5)));
    }
}
