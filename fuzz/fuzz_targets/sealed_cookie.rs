#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate::fuzzing::sealed_cookie(data));
