//! The README's authorization guide stays true: its token recipe is the one
//! `tests/auth.rs` runs from docs/auth.md, word for word, and its flags table
//! lists every authorization flag the binary's `--help` does.

use std::path::Path;
use std::process::Command;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// The fenced block after the first line that holds `marker`.
fn block_after(text: &str, marker: &str) -> String {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("no {marker}"))..];
    let start = rest.find("```").unwrap();
    let body = &rest[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

#[test]
fn the_readme_recipe_is_the_tested_one() {
    let readme = block_after(&read("README.md"), "(mint-openssl)");
    let tested = block_after(&read("docs/auth.md"), "(mint-openssl)");
    assert!(
        readme.contains("openssl dgst -sha256 -mac HMAC"),
        "{readme}"
    );
    assert_eq!(
        readme, tested,
        "README.md's recipe drifted from docs/auth.md's"
    );
}

#[test]
fn the_flags_table_lists_the_authorization_flags() {
    let readme = read("README.md");
    let help = Command::new(env!("CARGO_BIN_EXE_tinysse"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, env) in [
        ("--jwt-secret KEY", "TINYSSE_JWT_SECRET"),
        ("--jwt-secret-file FILE", "TINYSSE_JWT_SECRET_FILE"),
        ("--jwt-public-key FILE", "TINYSSE_JWT_PUBLIC_KEY"),
        ("--open-topics PATTERNS", "TINYSSE_OPEN_TOPICS"),
    ] {
        assert!(
            readme.contains(&format!("| `{flag}` | `{env}` |")),
            "README flags table lacks {flag}"
        );
        assert!(
            help.contains(flag) && help.contains(env),
            "--help lacks {flag}"
        );
    }
}
