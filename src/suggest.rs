//! "Did you mean ...?": the nearest known name to a misspelled one.

/// The candidate closest to `word` by edit distance (a swap of two
/// neighbours counts as one edit), if it is close enough to be a typo: at
/// most 2 edits, and at most a third of the word's length for short words.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// The backquoted names in the "expected ..." part of a serde message, such
/// as "unknown field `x`, expected `a` or `b`".
pub(crate) fn expected_names(message: &str) -> Vec<&str> {
    let Some((_, expected)) = message.split_once("expected") else {
        return Vec::new();
    };
    expected.split('`').skip(1).step_by(2).collect()
}

/// The name serde's "unknown field `x`" or "unknown variant `x`" is about.
pub(crate) fn unknown_name(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_near_misses() {
        let keys = [
            "idle_timeout",
            "max_connections",
            "chunk_size",
            "name",
            "bind",
        ];
        assert_eq!(closest("idle_timout", keys), Some("idle_timeout"));
        assert_eq!(closest("max_conections", keys), Some("max_connections"));
        assert_eq!(closest("chunksize", keys), Some("chunk_size"));
        assert_eq!(closest("nmae", keys), Some("name"));
        assert_eq!(closest("bogus", keys), None);
        assert_eq!(closest("x", keys), None);
    }

    #[test]
    fn reads_serde_messages() {
        let m = "unknown field `keyword`, expected `keywords` or `reply`";
        assert_eq!(unknown_name(m), Some("keyword"));
        assert_eq!(expected_names(m), ["keywords", "reply"]);
        let m = "unknown variant `xml`, expected one of `text`, `json`";
        assert_eq!(unknown_name(m), Some("xml"));
        assert_eq!(expected_names(m), ["text", "json"]);
        assert!(expected_names("unknown field `a`, there are no fields").is_empty());
    }
}
