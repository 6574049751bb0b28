//! A counter recipe: adds to a number kept in a znode, atomically, in one
//! round trip.
//!
//! Arguments: JSON `{"path": "/counters/x", "by": 1}` (`by` defaults to 1).
//! The node holds the number as decimal text; it is created (with its
//! parent chain missing = an error) at 0 if absent. Returns the new value as
//! decimal text.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};

pub struct Counter;

impl Recipe for Counter {
    fn call(_ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: serde_json::Value = serde_json::from_slice(args).map_err(|e| format!("arguments: {e}"))?;
        let path = args["path"].as_str().ok_or("arguments: give \"path\"")?;
        let by = match &args["by"] {
            serde_json::Value::Null => 1,
            v => v.as_i64().ok_or("arguments: \"by\" must be an integer")?,
        };
        let value = match tree.get(path).map_err(|f| f.to_string())? {
            Some((data, stat)) => {
                let text = core::str::from_utf8(&data).map_err(|_| format!("{path} does not hold a number"))?;
                let old: i64 = if text.is_empty() {
                    0
                } else {
                    text.trim().parse().map_err(|_| format!("{path} holds {text:?}, not a number"))?
                };
                let new = old.checked_add(by).ok_or("overflow")?;
                tree.set(path, new.to_string().as_bytes(), stat.version).map_err(|f| f.to_string())?;
                new
            }
            None => match tree.create(path, by.to_string().as_bytes(), CreateMode::Persistent) {
                Ok(_) => by,
                Err(Fault::NoNode) => return Err(format!("the parent of {path} does not exist")),
                Err(f) => return Err(f.to_string()),
            },
        };
        Ok(value.to_string().into_bytes())
    }
}

corral_sdk::export_recipe!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::{MemTree, Read};

    #[test]
    fn counts() {
        let mut t = MemTree::new();
        t.put("/counters", b"");
        let ctx = Context::test();
        assert_eq!(Counter::call(&ctx, &mut t, br#"{"path":"/counters/a"}"#).unwrap(), b"1");
        assert_eq!(Counter::call(&ctx, &mut t, br#"{"path":"/counters/a","by":41}"#).unwrap(), b"42");
        assert_eq!(t.get("/counters/a").unwrap().unwrap().0, b"42");
        assert!(Counter::call(&ctx, &mut t, br#"{"path":"/nope/a"}"#).unwrap_err().contains("parent"));
        assert!(Counter::call(&ctx, &mut t, b"not json").is_err());
    }
}
