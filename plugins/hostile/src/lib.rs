//! A hostile recipe, for the tests: each argument misbehaves in one way,
//! and the host must turn each into an error for that call only.
//!
//! | args        | what it does |
//! |-------------|--------------|
//! | `loop`      | loops forever (fuel ends it) |
//! | `grow`      | allocates until memory.grow fails (the memory limit) |
//! | `recurse`   | recurses without end (a stack overflow) |
//! | `output`    | returns 2 MiB (the output quota) |
//! | `partial`   | creates nodes, then panics (no partial effect) |
//! | `panic`     | panics |
//! | `hostcalls` | calls the host without end (the host-call quota) |
//! | `random`    | returns `env.random(16)` and the context, hex |
//! | `ok`        | creates `/hostile/ok-` sequential and returns its path |
//! | `ephemeral` | creates `/hostile/eph-` ephemeral sequential (the caller's session owns it) |

use std::hint::black_box;

use corral_sdk::{Context, CreateMode, Recipe, Write};

pub struct Hostile;

fn recurse(n: u64, pad: [u64; 4]) -> u64 {
    if black_box(n) == u64::MAX {
        return pad[0];
    }
    black_box(recurse(n + 1, black_box(pad))) + pad[1]
}

impl Recipe for Hostile {
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
        match args {
            b"loop" => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            b"grow" => {
                // Reserve without touching: only memory.grow, cheap in fuel,
                // until the memory limit refuses it.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = Vec::with_capacity(1 << 20);
                    block.push(1u8);
                    hoard.push(black_box(block));
                }
            }
            b"recurse" => Ok(recurse(0, [1, 2, 3, 4]).to_string().into_bytes()),
            b"output" => Ok(vec![b'x'; 2 << 20]),
            b"partial" => {
                for i in 0..3 {
                    tree.create(&format!("/hostile/partial-{i}"), b"", CreateMode::Persistent)
                        .map_err(|f| f.to_string())?;
                }
                panic!("after three creates");
            }
            b"panic" => panic!("the guest panicked"),
            b"hostcalls" => {
                let mut n = 0u64;
                loop {
                    if tree.exists("/").map_err(|f| f.to_string())?.is_some() {
                        n = black_box(n + 1);
                    }
                }
            }
            b"random" => {
                let bytes = corral_sdk::random(16);
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                Ok(format!("{hex} {} {}", ctx.index, ctx.time_ms).into_bytes())
            }
            b"ok" => {
                let p =
                    tree.create("/hostile/ok-", b"", CreateMode::PersistentSequential).map_err(|f| f.to_string())?;
                Ok(p.into_bytes())
            }
            b"ephemeral" => {
                let p =
                    tree.create("/hostile/eph-", b"", CreateMode::EphemeralSequential).map_err(|f| f.to_string())?;
                Ok(p.into_bytes())
            }
            other => Err(format!("unknown mode {:?}", String::from_utf8_lossy(other))),
        }
    }
}

corral_sdk::export_recipe!(Hostile);
