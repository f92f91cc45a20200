//! The binary's command line: the first stdout line, flags, env vars, and
//! exit code 2 with a one-line error for anything bad.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tinysse"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tinysse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_them() {
    for (args, env, name) in [
        (&["--bogus"][..], &[][..], "--bogus"),
        (&["--queue", "0"], &[], "--queue"),
        (&["--max-streams", "0"], &[], "--max-streams"),
        (&["--heartbeat", "soon"], &[], "--heartbeat"),
        (&["--retry"], &[], "--retry"),
        (&["--addr", "not-an-address"], &[], "--addr"),
        (&["--history", "-3"], &[], "--history"),
        (&["--journal", "x"], &[], "--journal"),
        (&[], &[("TINYSSE_QUEUE", "zero")], "TINYSSE_QUEUE"),
        (&[], &[("TINYSSE_DEMO", "maybe")], "TINYSSE_DEMO"),
    ] {
        let (code, out, err) = run(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(name), "{args:?}: {err}");
        assert!(out.is_empty());
    }
}

#[test]
fn help_and_version_exit_0() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in ["--addr", "--public", "--heartbeat", "--retry", "--no-demo"] {
        assert!(out.contains(flag), "help lacks {flag}");
    }
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("tinysse {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn first_line_names_the_bound_port_and_flags_win_over_env() {
    let mut bin = Bin::start_env(
        &["--addr", "127.0.0.1:0", "--retry", "700"],
        &[("TINYSSE_RETRY", "9000"), ("TINYSSE_DEMO", "0")],
    );
    assert_ne!(bin.addr.port(), 0);
    let mut s = sse(bin.addr, "/events?topic=a", &[]);
    assert_eq!(s.next_item().unwrap(), Some(tinysse::Item::Retry(700)));
    // TINYSSE_DEMO=0 turned the demo off.
    assert_eq!(get(bin.addr, "/async").status, 404);
    bin.signal("TERM");
    assert_eq!(
        bin.wait_exit(Duration::from_secs(3)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn a_port_in_use_is_an_error_not_a_hang() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, out, err) = run(&["--addr", &addr], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(!out.contains("listening"));
}

/// The defaults are defined once, in the library (`tinysse::defaults`), and
/// `--help` prints them; the README's flag table must say the same.
#[test]
fn the_readme_states_the_defaults_help_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (code, help, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let mut checked = 0;
    // | `--flag ARG` | `TINYSSE_X` | `default` | meaning |
    for row in readme.lines().filter(|l| l.starts_with("| `--")) {
        // An escaped `\|` (as in `normal\|full`) is inside a cell.
        let row = row.replace("\\|", "/");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let flag = cells[1]
            .trim_matches('`')
            .split_whitespace()
            .next()
            .unwrap();
        let Some(default) = cells[3].strip_prefix('`').and_then(|d| d.strip_suffix('`')) else {
            continue; // "unset", "off", "demo on": nothing to print
        };
        // The flag's entry in the help: its line and any continuation lines.
        let entry: String = help
            .lines()
            .skip_while(|l| !l.starts_with(&format!("  {flag} ")))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
            .map(|(_, l)| l)
            .collect();
        assert!(!entry.is_empty(), "--help lacks {flag}");
        assert!(
            entry.contains(&format!("({default})")),
            "README says {flag} defaults to {default}; --help says: {entry}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} defaults found in README.md");
}
