//! A query: the data and child count of a node, answered by one member
//! from its own state, outside the log (no entry, no write).
//!
//! Arguments: a path. Returns `<zxid> <children> <data>`, where `zxid` is
//! the state the member answered from.

use corral_sdk::{Context, Query, Read};

pub struct Lookup;

impl Query for Lookup {
    fn call(ctx: &Context, tree: &impl Read, args: &[u8]) -> Result<Vec<u8>, String> {
        let path = core::str::from_utf8(args).map_err(|_| "the path is not UTF-8")?;
        let Some((data, stat)) = tree.get(path).map_err(|f| format!("{path}: {f}"))? else {
            return Err(format!("{path}: no node"));
        };
        let mut out = format!("{} {} ", ctx.index, stat.num_children).into_bytes();
        out.extend_from_slice(&data);
        Ok(out)
    }
}

corral_sdk::export_query!(Lookup);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    #[test]
    fn looks_up() {
        let mut t = MemTree::new();
        t.put("/a/b", b"").put("/a", b"hi");
        assert_eq!(Lookup::call(&Context::test(), &t, b"/a").unwrap(), b"1 1 hi");
        assert!(Lookup::call(&Context::test(), &t, b"/x").is_err());
    }
}
