//! Fuzz the package reader on raw bytes: `Package::open`, then everything a
//! client does with an opened package — the metadata, every block's range and
//! content, full verification — checked against itself (see `common`).
//!
//! Run with `scripts/fuzz` (seeds: small packages packed by the real `avail`
//! binary and the small fixtures of `crates/format/tests/fixtures`; inputs of
//! at most 64 KiB).

#![no_main]

mod common;

use avail_format::{Limits, Package};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(package) = Package::open(data.to_vec()) else {
        return;
    };
    common::check_package(data, &package, &Limits::default());
});
