#![no_main]
//! The SSE reader on any bytes: never panics, and always ends (every item
//! consumes input).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = tinysse::SseReader::new(data);
    for _ in 0..=data.len() {
        match r.next_item() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
});
