//! A recipe whose behaviour names its build, for upgrade and rollback
//! tests: `build.sh` builds it twice, with `CORRAL_PLUGIN_VERSION=1` and
//! `=2`.
//!
//! Each call writes its version to two nodes, `/versioned/a` and
//! `/versioned/b` (created if missing), and returns it: an entry that ran
//! half on one version and half on the other would show two versions.

use corral_sdk::{Context, CreateMode, Fault, Recipe, Write};

pub const VERSION: &str = match option_env!("CORRAL_PLUGIN_VERSION") {
    Some(v) => v,
    None => "0",
};

pub struct Versioned;

impl Recipe for Versioned {
    fn call(_ctx: &Context, tree: &mut impl Write, _args: &[u8]) -> Result<Vec<u8>, String> {
        for p in ["/versioned/a", "/versioned/b"] {
            match tree.set(p, VERSION.as_bytes(), -1) {
                Ok(_) => {}
                Err(Fault::NoNode) => {
                    tree.create(p, VERSION.as_bytes(), CreateMode::Persistent).map_err(|f| format!("{p}: {f}"))?;
                }
                Err(f) => return Err(format!("{p}: {f}")),
            }
        }
        Ok(VERSION.as_bytes().to_vec())
    }
}

corral_sdk::export_recipe!(Versioned);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    #[test]
    fn writes_its_version_twice() {
        let mut t = MemTree::new();
        t.put("/versioned", b"");
        assert_eq!(Versioned::call(&Context::test(), &mut t, b"").unwrap(), VERSION.as_bytes());
        assert_eq!(t.data("/versioned/a"), t.data("/versioned/b"));
    }
}
