#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::admission_review::run(data));
