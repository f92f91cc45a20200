#![no_main]
//! Request-target handling: splitting, percent-decoding and resolving under
//! the public directory never panic, and never resolve outside it.

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tinysse-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("sub"));
        let _ = std::fs::write(dir.join("index.html"), "x");
        let _ = std::fs::write(dir.join("sub/a.js"), "x");
        dir.canonicalize().unwrap_or(dir)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tinysse::fuzzing::percent_decode(s, true);
    let _ = tinysse::fuzzing::percent_decode(s, false);
    if let Some((path, _query)) = tinysse::fuzzing::split_target(s) {
        if let Some(file) = tinysse::fuzzing::resolve(root(), &path) {
            assert!(file.starts_with(root()), "{file:?} is outside the root");
        }
    }
});
