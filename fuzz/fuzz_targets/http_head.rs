#![no_main]
//! The request head parser and body framing of the vendored tiny_http
//! (PATCHES.md, 11, 12 and 14): where a head ends, what it parses to, how
//! its body is framed, and the chunked decoder over what follows. Never
//! panics; an accepted head is one that cannot be framed two ways.

use libfuzzer_sys::fuzz_target;
use tiny_http::Framing;

fuzz_target!(|data: &[u8]| {
    // The decoder alone, on anything.
    let (r, used) = tiny_http::decode_chunked(data);
    assert!(used <= data.len());
    if let Ok(body) = r {
        assert!(body.len() <= used);
    }

    let Some(end) = tiny_http::head_end(data) else {
        let _ = tiny_http::parse_head(data);
        return;
    };
    assert!(end <= data.len());
    let (head, rest) = data.split_at(end);
    let h = match tiny_http::parse_head(head) {
        Ok(h) => h,
        Err(e) => {
            assert!(
                matches!(e.status, 400 | 417 | 431 | 501 | 505),
                "unexpected status {e:?}"
            );
            return;
        }
    };
    assert!(h.version == (1, 0) || h.version == (1, 1), "{:?}", h.version);
    assert!(!h.target.is_empty() && h.target.bytes().all(|b| b.is_ascii_graphic()));
    let named = |name: &str| {
        h.headers
            .iter()
            .filter(|x| x.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|x| x.value.as_str().to_string())
            .collect::<Vec<_>>()
    };
    let lengths = named("Content-Length");
    let codings = named("Transfer-Encoding");
    match h.framing {
        Framing::None => assert!(lengths.is_empty() && codings.is_empty()),
        Framing::Length(n) => {
            assert!(codings.is_empty());
            assert!(!lengths.is_empty());
            for v in &lengths {
                assert!(v.bytes().all(|b| b.is_ascii_digit()), "{v:?}");
                assert_eq!(v.parse::<u64>().ok(), Some(n));
            }
        }
        Framing::Chunked => {
            assert!(lengths.is_empty());
            assert_eq!(codings.len(), 1);
            assert!(codings[0].trim().eq_ignore_ascii_case("chunked"));
            let (r, used) = tiny_http::decode_chunked(rest);
            assert!(used <= rest.len());
            if let Ok(body) = r {
                assert!(body.len() <= used);
            }
        }
    }
});
