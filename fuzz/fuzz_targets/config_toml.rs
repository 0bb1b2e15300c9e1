//! A `--config` file: any text gives settings or a list of bad settings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match refedge::config::Config::from_toml(text) {
        Ok(c) => assert!(!c.programs.is_empty()),
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
