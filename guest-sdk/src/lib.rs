//! Write Corral plugins in Rust.
//!
//! A plugin is a WebAssembly component that every Corral replica runs inside
//! the apply of a log entry, atomically with it. It is one of four kinds,
//! chosen with this crate's feature of the same name (exactly one):
//!
//! | feature     | trait         | it can         | runs when |
//! |-------------|---------------|----------------|-----------|
//! | `validator` | [`Validator`] | read           | a write changes a bound path; `Err` vetoes the write |
//! | `trigger`   | [`Trigger`]   | read and write | a write changed a bound path; its writes join the entry |
//! | `recipe`    | [`Recipe`]    | read and write | a client calls it, through the log |
//! | `query`     | [`Query`]     | read           | a client calls it, on one member, outside the log |
//!
//! Everything a call may depend on comes from the entry (the [`Context`]) or
//! from the tree: there is no clock and no randomness but [`random`]. A call
//! that panics, runs out of fuel or goes over a limit traps: its writes are
//! discarded and the caller gets an error.
//!
//! ```
//! use corral_sdk::{Context, CreateMode, MemTree, Read, Recipe, Write};
//!
//! /// Appends `args` as a sequential child of /log; returns its path.
//! struct Append;
//!
//! impl Recipe for Append {
//!     fn call(_ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String> {
//!         let path = tree
//!             .create("/log/entry-", args, CreateMode::PersistentSequential)
//!             .map_err(|f| f.to_string())?;
//!         Ok(path.into_bytes())
//!     }
//! }
//! // In the plugin crate: corral_sdk::export_recipe!(Append);
//!
//! // Tested natively against an in-memory tree:
//! let mut tree = MemTree::new();
//! tree.create("/log", b"", CreateMode::Persistent).unwrap();
//! let out = Append::call(&Context::test(), &mut tree, b"hello").unwrap();
//! assert_eq!(out, b"/log/entry-0000000000");
//! assert_eq!(tree.get("/log/entry-0000000000").unwrap().unwrap().0, b"hello");
//! ```

extern crate alloc;

#[cfg(all(feature = "bump-heap", target_arch = "wasm32"))]
mod heap;
mod mem;
mod types;

use alloc::string::String;
use alloc::vec::Vec;

pub use mem::MemTree;
pub use types::{Change, ChangeKind, Context, CreateMode, Fault, Stat, parent};

#[cfg(any(feature = "validator", feature = "trigger", feature = "recipe", feature = "query"))]
mod guest;
#[cfg(any(feature = "validator", feature = "trigger", feature = "recipe", feature = "query"))]
pub use guest::{Host, log, random};
#[cfg(any(feature = "validator", feature = "trigger", feature = "recipe", feature = "query"))]
#[doc(hidden)]
pub use guest::{bindings, convert as __convert};

#[doc(hidden)]
pub mod __rt {
    pub use alloc::string::String;
    pub use alloc::vec::Vec;
}

/// Reading the tree: the state as of the entry, with the entry's earlier
/// writes.
pub trait Read {
    /// Data and stat of a node, or `None` if it does not exist.
    fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, Fault>;
    /// The stat of a node, or `None`.
    fn exists(&self, path: &str) -> Result<Option<Stat>, Fault>;
    /// Child names, sorted.
    fn children(&self, path: &str) -> Result<Vec<String>, Fault>;
}

/// Writing the tree, with ZooKeeper's rules (versions, sequence numbers,
/// ephemerals belong to the caller's session).
pub trait Write: Read {
    /// Creates a node with an open ACL; returns its actual path (with the
    /// sequence suffix, for sequential modes).
    fn create(&mut self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Fault>;
    /// Sets data if `version` matches (-1: any version).
    fn set(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, Fault>;
    /// Deletes a childless node if `version` matches (-1: any version).
    fn delete(&mut self, path: &str, version: i32) -> Result<(), Fault>;
}

/// Vetoes writes under the plugin's bound paths.
pub trait Validator {
    /// `Err(message)` vetoes the whole entry; the client gets the message
    /// (over ZooKeeper, as BadArguments).
    fn validate(ctx: &Context, tree: &impl Read, changes: &[Change]) -> Result<(), String>;
}

/// Reacts to writes under the plugin's bound paths, in the same entry.
pub trait Trigger {
    /// Its writes join the entry (they do not run triggers again); `Err`
    /// discards the whole entry.
    fn on_change(ctx: &Context, tree: &mut impl Write, changes: &[Change]) -> Result<(), String>;
}

/// A server-side operation, run in the log: one round trip, never half
/// applied.
pub trait Recipe {
    /// `Err(message)` is a domain error: the writes are discarded and the
    /// caller gets the message.
    fn call(ctx: &Context, tree: &mut impl Write, args: &[u8]) -> Result<Vec<u8>, String>;
}

/// A read-only operation, answered by one member from its state.
pub trait Query {
    fn call(ctx: &Context, tree: &impl Read, args: &[u8]) -> Result<Vec<u8>, String>;
}

/// Exports a [`Validator`] as the component's `validator` interface.
/// Needs the `validator` feature.
#[macro_export]
macro_rules! export_validator {
    ($t:ty) => {
        $crate::__export!(validator, $t);
    };
}

/// Exports a [`Trigger`]. Needs the `trigger` feature.
#[macro_export]
macro_rules! export_trigger {
    ($t:ty) => {
        $crate::__export!(trigger, $t);
    };
}

/// Exports a [`Recipe`]. Needs the `recipe` feature.
#[macro_export]
macro_rules! export_recipe {
    ($t:ty) => {
        $crate::__export!(recipe, $t);
    };
}

/// Exports a [`Query`]. Needs the `query` feature.
#[macro_export]
macro_rules! export_query {
    ($t:ty) => {
        $crate::__export!(query, $t);
    };
}
