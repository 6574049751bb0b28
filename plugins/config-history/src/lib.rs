//! A version-history trigger for runtime configuration: every change of a
//! node under the bound paths is recorded, in the same log entry, as
//! `<parent>/.history/<name>-NNNNNNNNNN` holding the new data (a deletion
//! records an empty `<name>-NNNNNNNNNN.deleted` marker). Paired with the
//! json-schema validator on the same paths, a configuration node only ever
//! takes valid values, and each value it took is kept, in order, for audit
//! or rollback by a client (read a history entry, write it back).
//!
//! Writes inside `.history` and to `.schema` nodes are not recorded.

use corral_sdk::{Change, ChangeKind, Context, CreateMode, Fault, Trigger, Write, parent};

pub struct ConfigHistory;

const HISTORY: &str = ".history";

impl Trigger for ConfigHistory {
    fn on_change(_ctx: &Context, tree: &mut impl Write, changes: &[Change]) -> Result<(), String> {
        for c in changes {
            let dir = parent(&c.path);
            let name = c.path.rsplit('/').next().unwrap_or_default();
            if name == HISTORY || name == ".schema" || dir.rsplit('/').next() == Some(HISTORY) {
                continue;
            }
            let history = if dir == "/" { format!("/{HISTORY}") } else { format!("{dir}/{HISTORY}") };
            match tree.create(&history, b"", CreateMode::Persistent) {
                Ok(_) | Err(Fault::NodeExists) => {}
                Err(f) => return Err(format!("{history}: {f}")),
            }
            let (entry, data): (String, &[u8]) = match (c.kind, &c.data) {
                (ChangeKind::Deleted, _) | (_, None) => (format!("{history}/{name}-deleted-"), b""),
                (_, Some(d)) => (format!("{history}/{name}-"), d),
            };
            tree.create(&entry, data, CreateMode::PersistentSequential).map_err(|f| format!("{entry}: {f}"))?;
        }
        Ok(())
    }
}

corral_sdk::export_trigger!(ConfigHistory);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::{MemTree, Read};

    #[test]
    fn records_each_value_in_order() {
        let mut t = MemTree::new();
        t.put("/config/web", b"v1");
        let change =
            |d: &[u8]| Change { path: "/config/web".into(), kind: ChangeKind::DataChanged, data: Some(d.to_vec()) };
        ConfigHistory::on_change(&Context::test(), &mut t, &[change(b"v1")]).unwrap();
        ConfigHistory::on_change(&Context::test(), &mut t, &[change(b"v2")]).unwrap();
        let h = t.children("/config/.history").unwrap();
        assert_eq!(h, ["web-0000000000", "web-0000000001"]);
        assert_eq!(t.data("/config/.history/web-0000000001"), Some(&b"v2"[..]));
    }
}
