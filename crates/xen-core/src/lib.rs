//! Rust core of xenrx.
//!
//! The crate is both the Node addon (through the `node` module, the only place
//! that knows about napi) and a plain Rust library whose logic is tested with
//! `cargo test` without a JavaScript engine.
#![deny(missing_docs)]

pub mod blk;
pub mod build_info;
pub mod console;
pub mod net;
#[cfg(feature = "node")]
pub mod node;
pub mod platform;
pub mod ring;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod wire;
pub mod xenstored;
pub mod xsclient;
