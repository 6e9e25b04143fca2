//! The hidden plumbing between the SDK traits and the generated component bindings.
//!
//! Each world is generated only under its own feature: wit-bindgen embeds a component-type section
//! for every world it generates, and a component must implement every world it carries.

pub use wit_bindgen as __wit_bindgen;

#[cfg(any(
    all(feature = "parser", feature = "step"),
    all(feature = "parser", feature = "connector"),
    all(feature = "step", feature = "connector")
))]
compile_error!(
    "lake-sdk: enable exactly one of the `parser`, `step` and `connector` features per plugin crate, and \
     build plugins one package at a time (`cargo build -p NAME`): a component carries one world"
);

use std::cell::RefCell;

use crate::{Info, Level, PluginError};
#[cfg(any(feature = "parser", feature = "step"))]
use crate::{RecordBatch, SchemaRef};

/// Encodes output batches, one self-describing IPC stream each; an empty output still carries its
/// schema so the host always learns the table's shape.
#[cfg(any(feature = "parser", feature = "step"))]
fn encode(
    schema: Option<&SchemaRef>,
    batches: Vec<RecordBatch>,
) -> Result<Vec<Vec<u8>>, PluginError> {
    if batches.is_empty() {
        return match schema {
            Some(s) => Ok(vec![crate::table::to_ipc(s, &[])?]),
            None => Ok(Vec::new()),
        };
    }
    // Each batch is dropped once encoded, so the output is not held twice.
    batches
        .into_iter()
        .map(|b| crate::table::to_ipc(&b.schema(), std::slice::from_ref(&b)))
        .collect()
}

macro_rules! world_glue {
    ($bindings:ident) => {
        use $bindings::lake::plugin::types as t;

        fn err(e: PluginError) -> t::PluginError {
            match e {
                PluginError::InvalidInput(m) => t::PluginError::InvalidInput(m),
                PluginError::InvalidParams(m) => t::PluginError::InvalidParams(m),
                PluginError::Unsupported(m) => t::PluginError::Unsupported(m),
                PluginError::TooLarge(m) => t::PluginError::TooLarge(m),
                PluginError::Internal(m) => t::PluginError::Internal(m),
            }
        }

        /// The `describe` answer for a plugin.
        pub fn info(i: Info, kind: t::Kind) -> t::Info {
            t::Info {
                name: i.name.to_owned(),
                version: i.version.to_owned(),
                wit_version: crate::WIT_VERSION.to_owned(),
                kind,
                description: i.description.to_owned(),
                capabilities: i.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            }
        }

        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(crate) fn log(level: Level, message: &str) {
            use $bindings::lake::plugin::host::{self, Level as L};
            let l = match level {
                Level::Trace => L::Trace,
                Level::Debug => L::Debug,
                Level::Info => L::Info,
                Level::Warn => L::Warn,
                Level::Error => L::Error,
            };
            host::log(l, message);
        }

        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(crate) fn progress(done: u64, total: Option<u64>) {
            $bindings::lake::plugin::host::progress(done, total);
        }
    };
}

/// Bindings and adapters of the parser world.
#[cfg(feature = "parser")]
pub mod parser {
    use super::*;

    #[allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "parser-plugin",
            path: "../wit/plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "__export_parser_world",
            default_bindings_module: "lake_sdk::glue::parser::bindings",
            runtime_path: "lake_sdk::glue::__wit_bindgen::rt",
        });
    }

    world_glue!(bindings);

    use bindings::exports::lake::plugin::parser::{GuestParse, Parse};

    /// Runs a [`crate::Parser`] behind the `parse` resource.
    #[derive(Debug)]
    pub struct ParseAdapter<P>(RefCell<P>);

    impl<P: crate::Parser> GuestParse for ParseAdapter<P> {
        fn start(params: Vec<(String, String)>) -> Result<Parse, t::PluginError> {
            let p = P::start(crate::Params::new(params)).map_err(err)?;
            Ok(Parse::new(ParseAdapter(RefCell::new(p))))
        }
        fn push(&self, chunk: Vec<u8>) -> Result<Vec<Vec<u8>>, t::PluginError> {
            let batches = self.0.borrow_mut().push(&chunk).map_err(err)?;
            encode(None, batches).map_err(err)
        }
        fn finish(&self) -> Result<Vec<Vec<u8>>, t::PluginError> {
            let (schema, batches) = self.0.borrow_mut().finish().map_err(err)?;
            let mut out = encode(Some(&schema), batches).map_err(err)?;
            if out.is_empty() {
                out.push(crate::table::to_ipc(&schema, &[]).map_err(err)?);
            }
            Ok(out)
        }
    }
}

/// Bindings and adapters of the step world.
#[cfg(feature = "step")]
pub mod step {
    use super::*;

    #[allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "step-plugin",
            path: "../wit/plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "__export_step_world",
            default_bindings_module: "lake_sdk::glue::step::bindings",
            runtime_path: "lake_sdk::glue::__wit_bindgen::rt",
        });
    }

    world_glue!(bindings);

    use bindings::exports::lake::plugin::step::{GuestRun, Run};

    /// Runs a [`crate::Step`] behind the `run` resource.
    #[derive(Debug)]
    pub struct RunAdapter<S>(RefCell<S>);

    impl<S: crate::Step> GuestRun for RunAdapter<S> {
        fn start(
            params: Vec<(String, String)>,
            input_schemas: Vec<Vec<u8>>,
        ) -> Result<Run, t::PluginError> {
            let schemas = input_schemas
                .into_iter()
                .map(|b| crate::table::from_ipc(b).map(|(s, _)| s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let s = S::start(crate::Params::new(params), schemas).map_err(err)?;
            Ok(Run::new(RunAdapter(RefCell::new(s))))
        }
        fn push(&self, input: u32, batch: Vec<u8>) -> Result<Vec<Vec<u8>>, t::PluginError> {
            let (_, batches) = crate::table::from_host_ipc(batch).map_err(err)?;
            let mut out = Vec::new();
            for b in batches {
                out.extend(self.0.borrow_mut().push(input as usize, b).map_err(err)?);
            }
            encode(None, out).map_err(err)
        }
        fn finish(&self) -> Result<Vec<Vec<u8>>, t::PluginError> {
            let (schema, batches) = self.0.borrow_mut().finish().map_err(err)?;
            encode(Some(&schema), batches).map_err(err)
        }
    }
}

/// Bindings and adapters of the connector world.
#[cfg(feature = "connector")]
pub mod connector {
    use super::*;

    #[allow(missing_docs, missing_debug_implementations, unsafe_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "connector-plugin",
            path: "../wit/plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "__export_connector_world",
            default_bindings_module: "lake_sdk::glue::connector::bindings",
            generate_all,
            runtime_path: "lake_sdk::glue::__wit_bindgen::rt",
        });
    }

    world_glue!(bindings);

    use bindings::exports::lake::plugin::connector::{Collect, GuestCollect, Part};

    /// Runs a [`crate::Connector`] behind the `collect` resource.
    #[derive(Debug)]
    pub struct CollectAdapter<C>(RefCell<C>);

    impl<C: crate::Connector> GuestCollect for CollectAdapter<C> {
        fn start(params: Vec<(String, String)>) -> Result<Collect, t::PluginError> {
            let c = C::start(crate::Params::new(params)).map_err(err)?;
            Ok(Collect::new(CollectAdapter(RefCell::new(c))))
        }
        fn next(&self) -> Result<Option<Part>, t::PluginError> {
            let part = self.0.borrow_mut().next().map_err(err)?;
            Ok(part.map(|p| Part {
                name: p.name,
                bytes: p.bytes,
                last: p.last,
                content_type: p.content_type,
                facts: p.facts,
            }))
        }
    }
}

#[cfg(all(
    target_arch = "wasm32",
    feature = "connector",
    not(any(feature = "parser", feature = "step"))
))]
pub(crate) use connector::{log, progress};
#[cfg(all(target_arch = "wasm32", feature = "parser"))]
pub(crate) use parser::{log, progress};
#[cfg(all(target_arch = "wasm32", feature = "step", not(feature = "parser")))]
pub(crate) use step::{log, progress};

/// Exports a [`crate::Parser`] as this component's parser. Use once, at the crate root.
#[cfg(feature = "parser")]
#[macro_export]
macro_rules! export_parser {
    ($t:ty) => {
        // Only a wasm build is a component; natively the plugin is plain Rust for unit tests.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __lake_parser_export {
            use super::*;
            struct Export;
            impl $crate::glue::parser::bindings::exports::lake::plugin::plugin::Guest for Export {
                fn describe() -> $crate::glue::parser::bindings::lake::plugin::types::Info {
                    $crate::glue::parser::info(
                        <$t as $crate::Parser>::info().or_package(
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION"),
                            env!("CARGO_PKG_DESCRIPTION"),
                            "parser",
                        ),
                        $crate::glue::parser::bindings::lake::plugin::types::Kind::Parser,
                    )
                }
            }
            impl $crate::glue::parser::bindings::exports::lake::plugin::parser::Guest for Export {
                type Parse = $crate::glue::parser::ParseAdapter<$t>;
            }
            $crate::glue::parser::bindings::__export_parser_world!(Export with_types_in $crate::glue::parser::bindings);
        }
    };
}

/// Exports a [`crate::Step`] as this component's step. Use once, at the crate root.
#[cfg(feature = "step")]
#[macro_export]
macro_rules! export_step {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __lake_step_export {
            use super::*;
            struct Export;
            impl $crate::glue::step::bindings::exports::lake::plugin::plugin::Guest for Export {
                fn describe() -> $crate::glue::step::bindings::lake::plugin::types::Info {
                    $crate::glue::step::info(
                        <$t as $crate::Step>::info().or_package(
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION"),
                            env!("CARGO_PKG_DESCRIPTION"),
                            "step",
                        ),
                        $crate::glue::step::bindings::lake::plugin::types::Kind::Step,
                    )
                }
            }
            impl $crate::glue::step::bindings::exports::lake::plugin::step::Guest for Export {
                type Run = $crate::glue::step::RunAdapter<$t>;
            }
            $crate::glue::step::bindings::__export_step_world!(Export with_types_in $crate::glue::step::bindings);
        }
    };
}

/// Exports a [`crate::Connector`] as this component's connector. Use once, at the crate root.
#[cfg(feature = "connector")]
#[macro_export]
macro_rules! export_connector {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __lake_connector_export {
            use super::*;
            struct Export;
            impl $crate::glue::connector::bindings::exports::lake::plugin::plugin::Guest for Export {
                fn describe() -> $crate::glue::connector::bindings::lake::plugin::types::Info {
                    $crate::glue::connector::info(
                        <$t as $crate::Connector>::info().or_package(
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION"),
                            env!("CARGO_PKG_DESCRIPTION"),
                            "connector",
                        ),
                        $crate::glue::connector::bindings::lake::plugin::types::Kind::Connector,
                    )
                }
            }
            impl $crate::glue::connector::bindings::exports::lake::plugin::connector::Guest
                for Export
            {
                type Collect = $crate::glue::connector::CollectAdapter<$t>;
            }
            $crate::glue::connector::bindings::__export_connector_world!(Export with_types_in $crate::glue::connector::bindings);
        }
    };
}
