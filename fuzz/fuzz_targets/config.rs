//! The config loader (`config/load.rs`) on any text, as `secret-sync validate` reads a file:
//! it returns a config or the list of errors, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `load` reads the file with `read_to_string`: text that is not UTF-8 never gets further.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = secret_sync::fuzzing::load_config(text);
});
