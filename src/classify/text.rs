//! Small text helpers for the hot path: case folding without heap allocation.

/// Longest string folded on the stack; longer input is passed through unchanged (host
/// names are at most 253 bytes, package and parameter names far shorter).
const STACK_FOLD_LIMIT: usize = 256;

/// Calls `f` with an ASCII-lowercase view of `text`, using a stack buffer when `text`
/// contains upper-case letters. Non-ASCII bytes are left as they are, so the result is
/// still valid UTF-8.
pub(crate) fn with_ascii_lowercase<R>(text: &str, f: impl FnOnce(&str) -> R) -> R {
    if !text.bytes().any(|b| b.is_ascii_uppercase()) || text.len() > STACK_FOLD_LIMIT {
        return f(text);
    }
    let mut buffer = [0u8; STACK_FOLD_LIMIT];
    let folded = &mut buffer[..text.len()];
    folded.copy_from_slice(text.as_bytes());
    folded.make_ascii_lowercase();
    match std::str::from_utf8(folded) {
        Ok(lower) => f(lower),
        Err(_) => f(text),
    }
}

/// Truncates `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_on_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// Deserialises a string and validates it inside the visitor, so that the format's
/// deserialiser attaches the scalar's own location (line and column) to the error.
pub(crate) fn deserialize_parsed<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ParseVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }

    impl<T> serde::de::Visitor<'_> for ParseVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<T, E> {
            (self.parse)(value).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(ParseVisitor { expecting, parse })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_without_changing_non_ascii() {
        assert_eq!(
            with_ascii_lowercase("WWW.Ex.COM", str::to_owned),
            "www.ex.com"
        );
        assert_eq!(with_ascii_lowercase("ÄB", str::to_owned), "Äb");
        assert_eq!(with_ascii_lowercase("plain", str::to_owned), "plain");
    }

    #[test]
    fn truncates_on_boundaries() {
        assert_eq!(truncate_on_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_on_char_boundary("hello", 10), "hello");
    }
}
