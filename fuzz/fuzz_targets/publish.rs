#![no_main]
//! The publish body parser, JSON and form: never panics; what it accepts has
//! a valid topic, encodes to a frame that ends with a blank line, and never
//! has the server's own event type `gap`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for json in [true, false] {
        if let Ok((topic, frame)) = tinysse::fuzzing::parse_publish(data, json) {
            assert!(tinysse::valid_topic(&topic), "{topic:?}");
            assert!(frame.ends_with(b"\n\n"), "{frame:?}");
            assert!(!frame.starts_with(b"event: gap\n"), "{frame:?}");
        }
    }
});
