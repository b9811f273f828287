//! cargo-fuzz target `config`: the body is [`carpio_fuzz::config`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::config(data));
