//! One byte range (RFC 9110 §14.2): the `Range` header against a file's
//! size, and the `Content-Range` of the answer. Several ranges, several
//! `Range` fields (joined by commas), other units or a malformed header
//! are ignored (the whole file is sent).

/// A `Range` header's one byte range against a file of `size` bytes:
/// `None` when the header is to be ignored (not bytes, several ranges, or
/// malformed: the whole file is sent); `Some(Err(()))` when it cannot be
/// satisfied (416); else the first byte and the length.
pub(crate) fn byte_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Some(Err(()));
        }
        let len = suffix.min(size);
        return Some(Ok((size - len, len)));
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(number(last)?)
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    if first >= size {
        return Some(Err(()));
    }
    let last = last.map_or(size - 1, |last| last.min(size - 1));
    Some(Ok((first, last - first + 1)))
}

/// The `Content-Range` of `len` bytes from `start` of `size` (`len` > 0).
pub(crate) fn content_range(start: u64, len: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", start + len.max(1) - 1)
}

/// The `Content-Range` of a 416: the size only.
pub(crate) fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Option<Result<(u64, u64), ()>>;

    #[test]
    fn ranges_of_a_100_byte_file() {
        let cases: &[(&str, Answer)] = &[
            ("bytes=0-9", Some(Ok((0, 10)))),
            ("bytes=90-", Some(Ok((90, 10)))),
            ("bytes=-10", Some(Ok((90, 10)))),
            ("bytes=-1000", Some(Ok((0, 100)))),
            ("bytes=50-5000", Some(Ok((50, 50)))),
            (" bytes= 1 - 2 ", Some(Ok((1, 2)))),
            ("bytes=100-", Some(Err(()))),
            ("bytes=-0", Some(Err(()))),
            ("bytes=5-1", None),
            ("bytes=0-1,5-6", None),
            ("items=0-1", None),
            ("bytes=+1-2", None),
            ("bytes=1", None),
            ("bytes=99999999999999999999999-", None),
            // Two `Range` fields, joined by the request parser: ignored.
            ("bytes=5-, bytes=0-1", None),
            ("bytes=5-, bytes=5-", None),
            ("bytes=5-, ", None),
            (", bytes=5-", None),
        ];
        for (header, expected) in cases {
            assert_eq!(byte_range(header, 100), *expected, "{header:?}");
        }
        assert_eq!(byte_range("bytes=-5", 0), Some(Err(())));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(0, 10, 100), "bytes 0-9/100");
        assert_eq!(content_range(99, 1, 100), "bytes 99-99/100");
        assert_eq!(unsatisfied_range(100), "bytes */100");
    }
}
