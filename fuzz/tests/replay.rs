//! Replays every committed input of every fuzz target: the corpora
//! (`fuzz/corpus/<target>/`, grown by `cargo fuzz run`) and the inputs
//! that once crashed a target (`fuzz/regressions/<target>/`, kept after
//! their fix). Runs in the test command on stable Rust, without libFuzzer.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("connection", corral_fuzz::connection),
    ("log_entry", corral_fuzz::log_entry),
    ("snapshot", corral_fuzz::snapshot),
    ("admin_body", corral_fuzz::admin_body),
    ("config", corral_fuzz::config),
    ("plugin_input", corral_fuzz::plugin_input),
];

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|e| e.expect("readable").path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).expect("readable")).collect()
}

#[test]
fn every_committed_input_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(corpus.len() >= 10, "fuzz/corpus/{name} holds {} inputs: run cargo fuzz run {name}", corpus.len());
        let regressions = inputs(&root.join("regressions").join(name));
        for input in corpus.iter().chain(&regressions) {
            target(input);
        }
        eprintln!("{name}: {} corpus inputs, {} regressions", corpus.len(), regressions.len());
    }
}
