//! cargo-fuzz target `worker`: the body is [`carpio_fuzz::worker`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::worker(data));
