use std::io::Result as IoResult;
use std::io::{Error, ErrorKind, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF; if the sub-reader ends before,
/// that is an error (a body cut short is not a complete body). Nothing is
/// read when it is dropped: whatever is left of the body stays unread, and
/// the connection is closed after the response (PATCHES.md, 13), never
/// read on as a next request.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    /// Set once all `size` bytes were read.
    done: Option<Arc<AtomicBool>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    /// Reads `size` bytes from `reader`; `done` is set once they all were.
    pub fn new(reader: R, size: usize, done: Option<Arc<AtomicBool>>) -> EqualReader<R> {
        let r = EqualReader { reader, size, done };
        r.mark_if_done();
        r
    }

    fn mark_if_done(&self) {
        if self.size == 0 {
            if let Some(done) = &self.done {
                done.store(true, Ordering::Release);
            }
        }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 || buf.is_empty() {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(0) => Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the connection ended before the whole body came",
            )),
            Ok(len) => {
                self.size -= len;
                self.mark_if_done();
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());
        let done = Arc::new(AtomicBool::new(false));

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, Some(done.clone()));

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }
        assert!(done.load(Ordering::Acquire));

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());
        let done = Arc::new(AtomicBool::new(false));

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, Some(done.clone()));

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }
        // Dropping it skips nothing: the rest is not done, and still there.
        assert!(!done.load(Ordering::Acquire));

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "ello world");
    }

    #[test]
    fn a_short_body_is_an_error() {
        let mut r = EqualReader::new(&b"abc"[..], 5, None);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
