//! cargo-fuzz target `classify`: the body is [`carpio_fuzz::classify`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::classify(data));
