//! `deploy/tinysse.service` is a valid, hardened unit: `systemd-analyze
//! verify` accepts it without a warning, and `systemd-analyze security`
//! rates it as well protected. Skips, saying so, where systemd-analyze is
//! absent (it needs no running systemd); fails there when CI is set.

mod common;

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tinysse.service"))
        .expect("read deploy/tinysse.service")
}

/// Whether systemd-analyze is here; if not, `test` skips saying what to
/// install, or fails when CI is set (tests/common's one policy).
fn have_systemd_analyze(test: &str) -> bool {
    common::require(
        &format!("systemd::{test}"),
        &["systemd-analyze"],
        "apt-get install -y systemd",
    )
}

/// The unit in a temp dir, with ExecStart pointing at the binary just built
/// (verify refuses a unit whose command does not exist).
/// Each test gets its own directory: they run in parallel and each removes
/// its own when done.
fn unit_in_temp_dir(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tinysse-systemd-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let text = unit_text();
    assert!(
        text.contains("ExecStart=/usr/local/bin/tinysse "),
        "deploy/tinysse.service no longer starts /usr/local/bin/tinysse: update tests/systemd.rs"
    );
    let text = text.replace("/usr/local/bin/tinysse", env!("CARGO_BIN_EXE_tinysse"));
    let path = dir.join("tinysse.service");
    std::fs::write(&path, text).expect("write unit");
    (dir, path)
}

#[test]
fn the_unit_has_the_hardening_it_promises() {
    let text = unit_text();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=65536",
        "KillSignal=SIGTERM",
        "EnvironmentFile=/etc/tinysse/env",
    ] {
        assert!(lines.contains(&want), "deploy/tinysse.service lacks {want}");
    }
    // The flags it passes must be ones the binary knows.
    let exec = lines
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_tinysse"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run tinysse --help");
    assert!(
        out.status.success(),
        "tinysse refuses the unit's flags {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !have_systemd_analyze("systemd_analyze_verify_accepts_the_unit") {
        return;
    }
    let (dir, path) = unit_in_temp_dir("verify");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings (exit 0): refuse them too.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    if !have_systemd_analyze("systemd_analyze_security_rates_the_unit_ok") {
        return;
    }
    let (dir, path) = unit_in_temp_dir("security");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !stdout.contains("exposure level") {
        common::skip_or_fail(
            "systemd::systemd_analyze_security_rates_the_unit_ok",
            &format!(
                "this systemd-analyze cannot rate a unit offline: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
            "systemd 252 or later",
        );
        return;
    }
    let level: f64 = stdout
        .lines()
        .find_map(|l| l.split("exposure level for tinysse.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    // 0 is fully locked down, 10 is unprotected; systemd calls below 2 "OK".
    assert!(level <= 2.0, "exposure {level}:\n{stdout}");
}
