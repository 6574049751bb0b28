//! A child-counter trigger: keeps, beside each parent whose children change
//! under the bound paths, a node `<parent>.count` holding the number of its
//! children (decimal text). The count is written in the same entry as the
//! change, so it is never out of date.

use std::collections::BTreeSet;

use corral_sdk::{Change, ChangeKind, Context, CreateMode, Fault, Trigger, Write, parent};

pub struct ChildCounter;

impl Trigger for ChildCounter {
    fn on_change(_ctx: &Context, tree: &mut impl Write, changes: &[Change]) -> Result<(), String> {
        // Each parent once, in path order.
        let parents: BTreeSet<&str> = changes
            .iter()
            .filter(|c| c.kind != ChangeKind::DataChanged && !c.path.ends_with(".count"))
            .map(|c| parent(&c.path))
            .filter(|p| *p != "/")
            .collect();
        for p in parents {
            let count_path = format!("{p}.count");
            let n = match tree.children(p) {
                Ok(c) => c.len(),
                // The parent itself went away in this entry.
                Err(Fault::NoNode) => {
                    match tree.delete(&count_path, -1) {
                        Ok(()) | Err(Fault::NoNode) => {}
                        Err(f) => return Err(format!("{count_path}: {f}")),
                    }
                    continue;
                }
                Err(f) => return Err(f.to_string()),
            };
            let data = n.to_string();
            match tree.set(&count_path, data.as_bytes(), -1) {
                Ok(_) => {}
                Err(Fault::NoNode) => {
                    tree.create(&count_path, data.as_bytes(), CreateMode::Persistent)
                        .map_err(|f| format!("{count_path}: {f}"))?;
                }
                Err(f) => return Err(format!("{count_path}: {f}")),
            }
        }
        Ok(())
    }
}

corral_sdk::export_trigger!(ChildCounter);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;

    #[test]
    fn counts_children() {
        let mut t = MemTree::new();
        t.put("/svc/a", b"").put("/svc/b", b"");
        let created = |p: &str| Change { path: p.into(), kind: ChangeKind::Created, data: Some(vec![]) };
        ChildCounter::on_change(&Context::test(), &mut t, &[created("/svc/a"), created("/svc/b")]).unwrap();
        assert_eq!(t.data("/svc.count"), Some(&b"2"[..]));
        t.delete("/svc/a", -1).unwrap();
        let deleted = Change { path: "/svc/a".into(), kind: ChangeKind::Deleted, data: None };
        ChildCounter::on_change(&Context::test(), &mut t, &[deleted]).unwrap();
        assert_eq!(t.data("/svc.count"), Some(&b"1"[..]));
    }
}
