//! What one durable commit of the Raft log costs, against the disk's own
//! floor: a batch of entries written the way `raft::log_store` writes one
//! (one redb write transaction, `Durability::Immediate`), next to a bare
//! append of the same bytes and `fdatasync` on the same file system.
//!
//! The gap between the two is redb's fixed cost per durable commit (its
//! B-tree pages, allocator records and header, written to several places
//! in the file before one flush), which the log writer amortizes by
//! committing many entries at once.
//!
//! `cargo bench -p corral --bench log_commit`; the files live in a
//! temporary directory on the file system of `TMPDIR` (put it on the data
//! disk to measure that disk).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use redb::{Database, Durability, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// A batch of `entries` values of `bytes` each, committed with `durability`;
/// returns the time per commit over `iters` commits.
fn commits(dir: &std::path::Path, entries: usize, bytes: usize, durability: Durability, iters: u64) -> Duration {
    let path = dir.join(format!("log-{entries}-{bytes}-{durability:?}.redb"));
    let _ = std::fs::remove_file(&path);
    let db = Database::builder().set_cache_size(8 << 20).create(&path).expect("create the log");
    let value = vec![0x5a; bytes];
    let mut index = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(durability).expect("durability");
        {
            let mut log = txn.open_table(LOG).expect("table");
            for _ in 0..entries {
                index += 1;
                log.insert(index, value.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    start.elapsed()
}

fn log_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut g = c.benchmark_group("log_commit");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for bytes in [4096, 23 * 1100] {
        g.bench_function(format!("bare {bytes} B append + fdatasync"), |b| {
            let path = dir.path().join(format!("bare-{bytes}"));
            let mut f = OpenOptions::new().create(true).append(true).open(path).expect("open");
            let chunk = vec![0x5a; bytes];
            b.iter(|| {
                f.write_all(&chunk).expect("write");
                f.sync_data().expect("fdatasync");
            })
        });
    }
    for (entries, bytes, durability) in [
        (1, 0, Durability::Immediate),
        (1, 1100, Durability::Immediate),
        (23, 1100, Durability::Immediate),
        (1, 23 * 1100, Durability::Immediate),
        (23, 1100, Durability::None),
    ] {
        let name = format!("{entries} x {bytes} B, {durability:?}");
        g.bench_function(name, |b| b.iter_custom(|iters| commits(dir.path(), entries, bytes, durability, iters)));
    }
    g.finish();
}

criterion_group!(benches, log_commit);
criterion_main!(benches);
