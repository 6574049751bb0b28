//! The healthy instances of a service in the `registry` recipe's layout,
//! answered by one member from its state, outside the log.
//!
//! Arguments (JSON): `{"service": "api", "max_age_ms": 30000}` (the age
//! limit of the last health check, by the replicated time; optional).
//! Answers `{"instances": [{"instance", "address", "meta"}, ...]}`, sorted by
//! instance name.

use corral_sdk::{Context, Fault, Query, Read};
use serde_json::{Value, json};

pub struct Healthy;

impl Query for Healthy {
    fn call(ctx: &Context, tree: &impl Read, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let service =
            args["service"].as_str().filter(|s| !s.is_empty() && !s.contains('/')).ok_or("give \"service\"")?;
        let max_age = args["max_age_ms"].as_i64();
        let dir = format!("/services/{service}");
        let names = match tree.children(&dir) {
            Ok(n) => n,
            Err(Fault::NoNode) => Vec::new(),
            Err(f) => return Err(format!("{dir}: {f}")),
        };
        let mut out = Vec::new();
        for n in names {
            let p = format!("{dir}/{n}");
            let Some((data, _)) = tree.get(&p).map_err(|f| format!("{p}: {f}"))? else { continue };
            let Ok(rec) = serde_json::from_slice::<Value>(&data) else { continue };
            let fresh = max_age.is_none_or(|m| rec["checked_ms"].as_i64().is_some_and(|t| ctx.time_ms - t <= m));
            if rec["healthy"] == true && fresh {
                out.push(json!({ "instance": n, "address": rec["address"], "meta": rec["meta"] }));
            }
        }
        Ok(json!({ "instances": out }).to_string().into_bytes())
    }
}

corral_sdk::export_query!(Healthy);
