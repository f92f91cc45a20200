//! Static files: content types, directories, HEAD, `nosniff`, and no way
//! out of the public directory.

mod common;

use std::path::PathBuf;

use common::tcp;
use common::*;

fn public_fixture(name: &str) -> (PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!("tinysse-static-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let public = base.join("public");
    std::fs::create_dir_all(public.join("sub")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(public.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(public.join("style.css"), "p{}").unwrap();
    std::fs::write(public.join("sub/index.html"), "<p>sub</p>").unwrap();
    std::fs::write(public.join("a b.txt"), "spaced").unwrap();
    std::fs::write(base.join("secret.txt"), "do not serve").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), public.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&base, public.join("up")).unwrap();
    (base, public)
}

#[test]
fn serves_files_with_their_types() {
    let (base, public) = public_fixture("types");
    let srv = start(builder().public_dir(Some(public)));
    let a = srv.addr();

    let r = get(a, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "<h1>home</h1>");
    assert!(r.header("Content-Type").unwrap().starts_with("text/html"));

    let r = get(a, "/app.js");
    assert_eq!(r.status, 200);
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let r = get(a, "/style.css");
    assert!(r.header("Content-Type").unwrap().starts_with("text/css"));

    assert_eq!(get(a, "/sub").body, "<p>sub</p>");
    assert_eq!(get(a, "/sub/").body, "<p>sub</p>");
    assert_eq!(get(a, "/a%20b.txt").body, "spaced");
    assert_eq!(get(a, "/index.html?x=1").body, "<h1>home</h1>");

    let r = raw(
        a,
        b"HEAD /app.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("14"));
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("text/javascript")
    );

    assert_eq!(get(a, "/missing.html").status, 404);
    srv.stop();
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn nothing_outside_the_public_directory() {
    let (base, public) = public_fixture("escape");
    let srv = start(builder().public_dir(Some(public)));
    let a = srv.addr();
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/link.txt",
        "/up/secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ] {
        let r = raw(
            a,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("do not serve") && !r.body.contains("root:"),
            "{path}"
        );
    }
    assert_eq!(get(a, "/%zz").status, 400);
    assert_eq!(get(a, "/%00").status, 400);
    assert_eq!(get(a, "/%ff").status, 400);
    // Still serving.
    assert_eq!(get(a, "/").status, 200);
    srv.stop();
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn unknown_paths_and_methods() {
    let (base, public) = public_fixture("methods");
    let srv = start(builder().public_dir(Some(public)));
    let a = srv.addr();
    let r = get(a, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(a, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "not found\n");
    let r = request(a, "POST", "/healthz", &[], b"");
    assert_eq!(r.status, 405);
    assert!(r.header("Allow").unwrap().contains("GET"));
    let r = request(a, "DELETE", "/index.html", &[], b"");
    assert_eq!(r.status, 405);
    let r = request(a, "POST", "/events?topic=a", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = request(a, "GET", "/publish", &[], b"");
    assert_eq!(r.status, 405);
    srv.stop();
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn static_files_carry_nosniff() {
    let dir = std::env::temp_dir().join(format!("tinysse-nosniff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
    std::fs::write(dir.join("notes.txt"), "<script>alert(1)</script>").unwrap();
    let srv = start(builder().public_dir(Some(dir.clone())));
    let a = srv.addr();
    for target in ["/", "/notes.txt"] {
        let r = get(a, target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{target}"
        );
    }
    let head = format!("HEAD /notes.txt HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n");
    let (out, closed) = tcp::send_to_close(a, head.as_bytes(), TIMEOUT);
    assert!(closed);
    let out = String::from_utf8_lossy(&out);
    let (status, headers, body) = tcp::split_head(&out);
    assert_eq!((status, body), (200, ""));
    assert_eq!(
        tcp::header(&headers, "X-Content-Type-Options"),
        Some("nosniff")
    );
    srv.stop();
    let _ = std::fs::remove_dir_all(dir);
}
