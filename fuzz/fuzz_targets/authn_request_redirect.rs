#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rolegate::fuzzing::authn_request_redirect(data));
