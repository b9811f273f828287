//! cargo-fuzz target `carp`: the body is [`carpio_fuzz::carp`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::carp(data));
