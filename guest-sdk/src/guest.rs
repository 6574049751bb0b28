//! The component side: bindings generated from `wit/plugin.wit` for the
//! world the crate feature picks, [`Host`] (the tree through host calls),
//! and the export macro behind `export_validator!` and the others.

use alloc::string::String;
use alloc::vec::Vec;

use crate::Read;
use crate::types::{Change, ChangeKind, Context, Fault, Stat};
#[cfg(any(feature = "trigger", feature = "recipe"))]
use crate::{Write, types::CreateMode};

#[cfg(any(
    all(feature = "validator", any(feature = "trigger", feature = "recipe", feature = "query")),
    all(feature = "trigger", any(feature = "recipe", feature = "query")),
    all(feature = "recipe", feature = "query"),
))]
compile_error!(
    "corral-sdk: enable exactly one of the features validator, trigger, recipe, query (build plugins one at a time)"
);

/// Generated from `wit/plugin.wit`.
pub mod bindings {
    #[cfg(feature = "validator")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "validator-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "corral_sdk::bindings",
    });
    #[cfg(feature = "trigger")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "trigger-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "corral_sdk::bindings",
    });
    #[cfg(feature = "recipe")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "recipe-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "corral_sdk::bindings",
    });
    #[cfg(feature = "query")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "query-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "corral_sdk::bindings",
    });
}

use bindings::corral::plugin::{env, read, types as wit};

/// Conversions between the generated types and this crate's.
pub mod convert {
    use super::*;

    pub fn context(c: wit::Context) -> Context {
        Context { index: c.index, time_ms: c.time_ms, session: c.session, principal: c.principal, plugin: c.plugin }
    }

    pub fn changes(changes: Vec<wit::Change>) -> Vec<Change> {
        changes
            .into_iter()
            .map(|c| Change {
                path: c.path,
                kind: match c.kind {
                    wit::ChangeKind::Created => ChangeKind::Created,
                    wit::ChangeKind::DataChanged => ChangeKind::DataChanged,
                    wit::ChangeKind::Deleted => ChangeKind::Deleted,
                },
                data: c.data,
            })
            .collect()
    }

    pub(crate) fn stat(s: wit::Stat) -> Stat {
        Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
            pzxid: s.pzxid,
        }
    }

    pub(crate) fn fault(f: wit::Fault) -> Fault {
        match f {
            wit::Fault::NoNode => Fault::NoNode,
            wit::Fault::NodeExists => Fault::NodeExists,
            wit::Fault::BadVersion => Fault::BadVersion,
            wit::Fault::NotEmpty => Fault::NotEmpty,
            wit::Fault::NoChildrenForEphemerals => Fault::NoChildrenForEphemerals,
            wit::Fault::NoAuth => Fault::NoAuth,
            wit::Fault::BadArguments(m) => Fault::BadArguments(m),
        }
    }
}

/// The tree, through the host: what the plugin's world imports.
pub struct Host;

impl Read for Host {
    fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, Fault> {
        read::get(path).map(|o| o.map(|(d, s)| (d, convert::stat(s)))).map_err(convert::fault)
    }

    fn exists(&self, path: &str) -> Result<Option<Stat>, Fault> {
        read::exists(path).map(|o| o.map(convert::stat)).map_err(convert::fault)
    }

    fn children(&self, path: &str) -> Result<Vec<String>, Fault> {
        read::children(path).map_err(convert::fault)
    }
}

#[cfg(any(feature = "trigger", feature = "recipe"))]
impl Write for Host {
    fn create(&mut self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Fault> {
        use bindings::corral::plugin::write;
        let mode = match mode {
            CreateMode::Persistent => wit::CreateMode::Persistent,
            CreateMode::Ephemeral => wit::CreateMode::Ephemeral,
            CreateMode::PersistentSequential => wit::CreateMode::PersistentSequential,
            CreateMode::EphemeralSequential => wit::CreateMode::EphemeralSequential,
            CreateMode::Container => wit::CreateMode::Container,
        };
        write::create(path, data, mode).map_err(convert::fault)
    }

    fn set(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, Fault> {
        bindings::corral::plugin::write::set(path, data, version).map(convert::stat).map_err(convert::fault)
    }

    fn delete(&mut self, path: &str, version: i32) -> Result<(), Fault> {
        bindings::corral::plugin::write::delete(path, version).map_err(convert::fault)
    }
}

/// `len` bytes that every replica computes alike and clients cannot
/// predict: derived from the cluster secret, the entry and the call.
pub fn random(len: u32) -> Vec<u8> {
    env::random(len)
}

/// A debug line in the node's log, counted against the output quota.
pub fn log(message: &str) {
    env::log(message)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    (validator, $t:ty) => {
        // Only a wasm build exports: native builds (tests) link without.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CorralExport;
            impl $crate::bindings::exports::corral::plugin::validator::Guest for __CorralExport {
                fn validate(
                    ctx: $crate::bindings::corral::plugin::types::Context,
                    changes: $crate::__rt::Vec<$crate::bindings::corral::plugin::types::Change>,
                ) -> ::core::result::Result<(), $crate::__rt::String> {
                    <$t as $crate::Validator>::validate(
                        &$crate::__convert::context(ctx),
                        &$crate::Host,
                        &$crate::__convert::changes(changes),
                    )
                }
            }
    $crate::bindings::__export_world!(__CorralExport with_types_in $crate::bindings);
        };
    };
    (trigger, $t:ty) => {
        // Only a wasm build exports: native builds (tests) link without.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CorralExport;
            impl $crate::bindings::exports::corral::plugin::trigger::Guest for __CorralExport {
                fn on_change(
                    ctx: $crate::bindings::corral::plugin::types::Context,
                    changes: $crate::__rt::Vec<$crate::bindings::corral::plugin::types::Change>,
                ) -> ::core::result::Result<(), $crate::__rt::String> {
                    <$t as $crate::Trigger>::on_change(
                        &$crate::__convert::context(ctx),
                        &mut $crate::Host,
                        &$crate::__convert::changes(changes),
                    )
                }
            }
    $crate::bindings::__export_world!(__CorralExport with_types_in $crate::bindings);
        };
    };
    (recipe, $t:ty) => {
        // Only a wasm build exports: native builds (tests) link without.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CorralExport;
            impl $crate::bindings::exports::corral::plugin::recipe::Guest for __CorralExport {
                fn call(
                    ctx: $crate::bindings::corral::plugin::types::Context,
                    args: $crate::__rt::Vec<u8>,
                ) -> ::core::result::Result<$crate::__rt::Vec<u8>, $crate::__rt::String> {
                    <$t as $crate::Recipe>::call(&$crate::__convert::context(ctx), &mut $crate::Host, &args)
                }
            }
    $crate::bindings::__export_world!(__CorralExport with_types_in $crate::bindings);
        };
    };
    (query, $t:ty) => {
        // Only a wasm build exports: native builds (tests) link without.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CorralExport;
            impl $crate::bindings::exports::corral::plugin::recipe::Guest for __CorralExport {
                fn call(
                    ctx: $crate::bindings::corral::plugin::types::Context,
                    args: $crate::__rt::Vec<u8>,
                ) -> ::core::result::Result<$crate::__rt::Vec<u8>, $crate::__rt::String> {
                    <$t as $crate::Query>::call(&$crate::__convert::context(ctx), &$crate::Host, &args)
                }
            }
    $crate::bindings::__export_world!(__CorralExport with_types_in $crate::bindings);
        };
    };
}
