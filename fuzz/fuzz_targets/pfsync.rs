//! cargo-fuzz target `pfsync`: the body is [`carpio_fuzz::pfsync`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::pfsync(data));
