//! Static files from the public directory: safe path resolution and content
//! types.

use std::path::{Path, PathBuf};

/// Why a path was not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileError {
    /// Malformed percent-encoding, NUL, or a path that is not UTF-8: 400.
    BadPath,
    /// Not there, or outside the public directory: 404 (the same answer,
    /// so a probe learns nothing about what lies outside).
    NotFound,
}

/// Decodes `%XX` escapes; `None` on malformed escapes or invalid UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Two hex digits exactly: from_str_radix alone would take "+f".
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Maps a URL path to a file under `root`. The decoded path may not climb
/// out with `..`, and the canonical result must still lie under the canonical
/// root, which also stops symlinks that point outside.
pub(crate) fn resolve(root: &Path, url_path: &str) -> Result<PathBuf, FileError> {
    let decoded = percent_decode(url_path, false).ok_or(FileError::BadPath)?;
    if decoded.contains('\0') {
        return Err(FileError::BadPath);
    }
    let mut rel = PathBuf::new();
    for part in decoded.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(FileError::NotFound),
            p => rel.push(p),
        }
    }
    let root = root.canonicalize().map_err(|_| FileError::NotFound)?;
    let mut path = root
        .join(&rel)
        .canonicalize()
        .map_err(|_| FileError::NotFound)?;
    if path.is_dir() {
        path = path
            .join("index.html")
            .canonicalize()
            .map_err(|_| FileError::NotFound)?;
    }
    if !path.starts_with(&root) || !path.is_file() {
        return Err(FileError::NotFound);
    }
    Ok(path)
}

/// The Content-Type for a file name.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b", false).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%2", false), None);
        assert_eq!(percent_decode("%+f", false), None);
        assert_eq!(percent_decode("%-1", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(percent_decode("%C3%A9", false).as_deref(), Some("é"));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("a/app.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
