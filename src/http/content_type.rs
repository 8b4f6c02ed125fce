//! The `Content-Type` of a file, by its extension (case-insensitive).

use std::path::Path;

/// The `Content-Type` of the file at `path`; `application/octet-stream`
/// when the extension is unknown.
pub(crate) fn of_path(path: &Path) -> &'static str {
    let mut ext = [0u8; 8];
    let ext = match path.extension().map(|e| e.as_encoded_bytes()) {
        Some(e) if e.len() <= ext.len() => {
            let ext = &mut ext[..e.len()];
            ext.copy_from_slice(e);
            ext.make_ascii_lowercase();
            std::str::from_utf8(ext).ok()
        }
        _ => None,
    };
    match ext {
        Some("txt" | "text" | "log" | "md" | "csv" | "toml" | "ini" | "conf") => {
            "text/plain; charset=utf-8"
        }
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js" | "mjs") => "text/javascript",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("mp3") => "audio/mpeg",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("zip") => "application/zip",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        let cases = [
            ("a.txt", "text/plain; charset=utf-8"),
            ("A.HTML", "text/html; charset=utf-8"),
            ("dir/x.tar.gz", "application/gzip"),
            ("x.Png", "image/png"),
            ("noext", "application/octet-stream"),
            ("x.verylongext", "application/octet-stream"),
            (".hidden", "application/octet-stream"),
            ("x.é", "application/octet-stream"),
        ];
        for (path, expected) in cases {
            assert_eq!(of_path(Path::new(path)), expected, "{path}");
        }
    }
}
