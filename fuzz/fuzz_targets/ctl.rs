//! cargo-fuzz target `ctl`: the body is [`carpio_fuzz::ctl`] (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carpio_fuzz::ctl(data));
