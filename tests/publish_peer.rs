//! Who may publish: without a token only loopback peers, with a token anyone
//! who has it. A real non-loopback peer is made with a network namespace
//! (the server runs inside it, the test connects from outside over a veth
//! pair). Needs root, `ip` and `nft`; skips with a message otherwise.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns.sh");
/// Not the /30 reliability_vanish uses, so the two may run at once.
const NET: &str = "10.213.78";
const BODY: &[u8] = br#"{"topic":"p","data":1}"#;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([SCRIPT, "down", &self.0])
            .status();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn in_namespace(name: &str, args: &[&str]) -> Bin {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", name, env!("CARGO_BIN_EXE_tinysse")]);
    Bin::start_cmd(cmd, args, &[])
}

#[test]
fn only_loopback_may_publish_without_a_token() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root || !have("ip") || !have("nft") {
        println!("SKIPPED publish_peer: needs root, iproute2 and nftables");
        return;
    }
    let name = format!("tspp{}", std::process::id() % 100_000);
    let up = Command::new("bash")
        .env("NETNS_NET", NET)
        .args([SCRIPT, "up", &name])
        .status();
    let _ns = Netns(name.clone());
    assert!(up.is_ok_and(|s| s.success()), "cannot set up the namespace");

    let json = [("Content-Type", "application/json")];
    let open = in_namespace(&name, &["--addr", &format!("{NET}.1:0"), "--no-demo"]);
    assert!(!open.addr.ip().is_loopback());
    let r = request(open.addr, "POST", "/publish", &json, BODY);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("loopback"), "{}", r.body);
    // Subscribing from afar is fine, and the refused publish left no trace.
    assert!(
        get(open.addr, "/metrics")
            .body
            .contains("tinysse_events_published_total 0")
    );
    drop(open);

    let guarded = in_namespace(
        &name,
        &[
            "--addr",
            &format!("{NET}.1:0"),
            "--no-demo",
            "--publish-token",
            "k3y",
        ],
    );
    let r = request(guarded.addr, "POST", "/publish", &json, BODY);
    assert_eq!(r.status, 401);
    let auth = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer k3y"),
    ];
    let r = request(guarded.addr, "POST", "/publish", &auth, BODY);
    assert_eq!(r.status, 200, "{}", r.body);
}
