//! Who may publish: without a token only loopback peers, with a token anyone
//! who has it. A real non-loopback peer is made with a network namespace
//! (the server runs inside it, the test connects from outside over a veth
//! pair). Needs root, `ip` and `nft`; skips saying so, or fails when CI is set.

mod common;

use common::*;

/// Not the /30 reliability_vanish uses, so the two may run at once.
const NET: &str = "10.213.78";
const BODY: &[u8] = br#"{"topic":"p","data":1}"#;

#[test]
fn only_loopback_may_publish_without_a_token() {
    if let Some(why) = Netns::unusable() {
        skip_or_fail(
            "publish_peer::only_loopback_may_publish_without_a_token",
            &why,
            "run as root; apt-get install -y iproute2 nftables",
        );
        return;
    }
    let ns = Netns::up("tspp", NET);

    let json = [("Content-Type", "application/json")];
    let open = ns.start(&["--addr", &format!("{NET}.1:0"), "--no-demo"]);
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

    let guarded = ns.start(&[
        "--addr",
        &format!("{NET}.1:0"),
        "--no-demo",
        "--publish-token",
        "k3y",
    ]);
    let r = request(guarded.addr, "POST", "/publish", &json, BODY);
    assert_eq!(r.status, 401);
    let auth = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer k3y"),
    ];
    let r = request(guarded.addr, "POST", "/publish", &auth, BODY);
    assert_eq!(r.status, 200, "{}", r.body);
}
