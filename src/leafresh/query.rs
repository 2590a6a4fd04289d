//! Query-string decoding as the Leafresh back end needs it: form decoding (`+` is a space), then
//! a second decoding of values the back end encoded twice.
//!
//! The Spring back end percent-encodes query values once more before proxying, so after the
//! normal decoding a value like `%EB%8F%84%EC%8B%9C` is still encoded; the contract says such a
//! value is decoded once more (`location=%25EB%258F%2584%25EC%258B%259C` means 도시).

use std::borrow::Cow;

use percent_encoding::percent_decode;
use thiserror::Error;

/// The parameters the Leafresh endpoints read. Only these are decoded strictly; any other key is
/// decoded leniently and never named in an error (a client's key is not echoed back).
pub const QUERY_FIELDS: &[&str] = &["location", "workType", "category", "sessionId", "message"];

/// Why a query string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The value of `field` (one of [`QUERY_FIELDS`]) percent-decodes to bytes that are not UTF-8.
    #[error("query parameter `{field}` is not valid UTF-8 after percent-decoding")]
    InvalidUtf8 { field: &'static str },
}

/// Decoded query parameters, in the order they appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parameters from already decoded pairs (for callers that decode elsewhere, and tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The first value of `name`, if present (later repetitions of a key are ignored).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Decodes a raw query string (without the leading `?`).
///
/// - `application/x-www-form-urlencoded`: pairs split on `&`, key and value on the first `=`,
///   `+` is a space, `%XX` is a byte.
/// - A value that still holds a `%XX` escape after that is decoded once more, again with `+` as a
///   space: a back end that form-encodes twice turns a space into `+` and then `+` into `%2B`,
///   so after our first pass a `+` stands for a space. If the second pass does not give UTF-8,
///   the `%XX` was literal text typed by a user (the back end only ever encodes valid UTF-8
///   strings) and the once-decoded value is kept.
/// - Malformed escapes (`%ZZ`, a truncated `%E`) are kept literally, as browsers do.
/// - Control characters are removed from keys and values: tab, CR and LF become a space (they
///   separate words), every other control character (NUL, ESC, DEL, C1 controls) is dropped.
///   Nothing downstream (prompts, logs, session ids) has a use for them.
///
/// Errors only when the value of one of [`QUERY_FIELDS`] is not UTF-8 after its first decoding
/// (`QueryError::InvalidUtf8`). Other keys' values, and keys that are not UTF-8, are decoded
/// lossily: nothing reads them, and junk a proxy adds must not break the request.
pub fn parse_query(raw_query: &str) -> Result<QueryParams, QueryError> {
    let mut pairs = Vec::new();
    for part in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = part.split_once('=').unwrap_or((part, ""));
        let key = strip_controls(&String::from_utf8_lossy(&form_decode(raw_key)));
        let decoded = form_decode(raw_value);
        let value = match QUERY_FIELDS.iter().find(|&&field| field == key) {
            Some(&field) => {
                String::from_utf8(decoded).map_err(|_| QueryError::InvalidUtf8 { field })?
            }
            None => String::from_utf8_lossy(&decoded).into_owned(),
        };
        let value = if has_percent_escape(&value) {
            String::from_utf8(form_decode(&value)).unwrap_or(value)
        } else {
            value
        };
        pairs.push((key, strip_controls(&value)));
    }
    Ok(QueryParams { pairs })
}

/// One round of form decoding: `+` to space, then percent-decoding to bytes.
fn form_decode(s: &str) -> Vec<u8> {
    let spaced: Cow<str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_decode(spaced.as_bytes()).collect()
}

/// Whether `s` holds a well-formed `%XX` escape.
fn has_percent_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn strip_controls(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(raw: &str, name: &str) -> Option<String> {
        parse_query(raw).unwrap().get(name).map(str::to_owned)
    }

    #[test]
    fn contract_double_encoded_example_decodes_to_dosi() {
        assert_eq!(
            get("location=%25EB%258F%2584%25EC%258B%259C", "location").as_deref(),
            Some("도시")
        );
    }

    #[test]
    fn single_encoded_values_decode_once() {
        let q = parse_query("location=%EB%8F%84%EC%8B%9C&workType=%EC%82%AC%EB%AC%B4%EC%A7%81")
            .unwrap();
        assert_eq!(q.get("location"), Some("도시"));
        assert_eq!(q.get("workType"), Some("사무직"));
    }

    #[test]
    fn plus_is_a_space_in_both_passes() {
        assert_eq!(
            get(
                "category=%EC%97%90%EB%84%88%EC%A7%80+%EC%A0%88%EC%95%BD",
                "category"
            )
            .as_deref(),
            Some("에너지 절약")
        );
        // Form-encoded twice: the space became `+`, then `+` became `%2B`.
        assert_eq!(
            get("category=%25EC%2597%2590%25EB%2584%2588%25EC%25A7%2580%2B%25EC%25A0%2588%25EC%2595%25BD", "category").as_deref(),
            Some("에너지 절약")
        );
        // A literal plus survives when encoded as %2B and nothing else is left encoded.
        assert_eq!(get("message=C%2B%2B", "message").as_deref(), Some("C++"));
    }

    #[test]
    fn double_encoded_space_as_percent_20_decodes() {
        assert_eq!(
            get("message=%25ED%2585%2580%2520%25EC%25BB%25B5", "message").as_deref(),
            Some("텀 컵")
        );
    }

    #[test]
    fn is_decoded_at_most_twice() {
        // Three layers: the third stays encoded rather than being guessed at.
        assert_eq!(get("m=%252541", "m").as_deref(), Some("%41"));
    }

    #[test]
    fn malformed_escapes_are_kept_literally() {
        assert_eq!(get("message=100%ZZ", "message").as_deref(), Some("100%ZZ"));
        assert_eq!(get("message=abc%E", "message").as_deref(), Some("abc%E"));
        assert_eq!(get("message=%", "message").as_deref(), Some("%"));
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        assert_eq!(
            parse_query("location=%FF%FE"),
            Err(QueryError::InvalidUtf8 { field: "location" })
        );
        // Truncated multi-byte sequence.
        assert_eq!(
            parse_query("a=1&message=%EB%8F"),
            Err(QueryError::InvalidUtf8 { field: "message" })
        );
    }

    /// Found by the `query` fuzz target (fuzz/regressions/query/unknown-key-echoed-in-error): a
    /// value that was not UTF-8 under an arbitrary key made the error message repeat the key,
    /// so a client could put any text (paths, markup, 60 KB of it) into our error body.
    #[test]
    fn regression_unknown_key_echoed_in_error() {
        let input = crate::test_support::regression_input("query", "unknown-key-echoed-in-error");
        let raw = String::from_utf8(input).unwrap();
        let params = parse_query(&raw).expect("junk under an unknown key is not an error");
        assert!(params.get("location").is_none());
        // Unknown keys with undecodable values are read leniently; known ones still refuse.
        let q = parse_query("../../etc/passwd=%FF&location=%EB%8F%84%EC%8B%9C").unwrap();
        assert_eq!(q.get("location"), Some("도시"));
        let err = parse_query("x%3A%3A=%FF&workType=%FF").unwrap_err();
        assert_eq!(
            err.to_string(),
            "query parameter `workType` is not valid UTF-8 after percent-decoding"
        );
    }

    #[test]
    fn second_pass_that_is_not_utf8_keeps_the_literal_text() {
        // A user who typed "%FF" sends "%25FF"; decoding it again would give a lone 0xFF byte.
        assert_eq!(get("message=%25FF", "message").as_deref(), Some("%FF"));
    }

    #[test]
    fn repeated_key_gives_the_first_value_and_missing_key_none() {
        let q = parse_query("sessionId=a&sessionId=b&empty=&flag").unwrap();
        assert_eq!(q.get("sessionId"), Some("a"));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(q.pairs().len(), 4);
        assert!(parse_query("").unwrap().pairs().is_empty());
    }

    #[test]
    fn control_characters_are_stripped_and_line_breaks_become_spaces() {
        assert_eq!(get("m=a%00b%1Bc%7F", "m").as_deref(), Some("abc"));
        assert_eq!(get("m=a%0Ab%0D%0Ac%09d", "m").as_deref(), Some("a b  c d"));
        // Also when the control character was double-encoded.
        assert_eq!(get("m=a%2500b", "m").as_deref(), Some("ab"));
    }

    #[test]
    fn keys_are_decoded_too() {
        assert_eq!(get("work%54ype=x", "workType").as_deref(), Some("x"));
    }
}
