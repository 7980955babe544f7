#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate::fuzzing::discovery(data));
