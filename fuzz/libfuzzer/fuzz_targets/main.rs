//! libFuzzer entry: runs the target named by `WARDEN_FUZZ_TARGET` (one of `warden_fuzz::TARGETS`).
#![no_main]

use std::sync::OnceLock;

fn target() -> fn(&[u8]) {
    static T: OnceLock<fn(&[u8])> = OnceLock::new();
    *T.get_or_init(|| {
        let name = std::env::var("WARDEN_FUZZ_TARGET").unwrap_or_default();
        warden_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = warden_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            panic!("WARDEN_FUZZ_TARGET={name:?} is not a target; one of {names:?}")
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
