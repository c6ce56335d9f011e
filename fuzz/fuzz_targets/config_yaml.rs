#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| darklight_fuzz::config_yaml(data));
