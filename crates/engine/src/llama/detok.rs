//! Token bytes -> valid UTF-8 text, and stop strings found in that text.
//!
//! Token bytes -> valid UTF-8 text. A token may carry part of a character (a Hangul syllable is
//! three bytes and byte-fallback tokenizers spell it as three tokens; an emoji is four), so bytes
//! are held back until their character is complete. Bytes that can never become a character are
//! replaced with U+FFFD, one replacement per invalid sequence, the way `String::from_utf8_lossy`
//! does: downstream code only ever sees valid text.

/// Incremental UTF-8 decoder for a stream of token pieces.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the bytes of one token and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(text) => {
                    out.push_str(text);
                    start = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid = start + error.valid_up_to();
                    // SAFETY of the slice: from_utf8 just validated these bytes.
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or(""));
                    match error.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            start = valid;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        self.pending.clear();
        char::REPLACEMENT_CHARACTER.to_string()
    }
}

/// Finds the caller's stop strings in the streamed text. Text that could be the beginning of a
/// stop string is held back until it is clear, so a stop string is never sent, not even in part.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
    /// The stop string that was reached.
    matched: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
            matched: None,
        }
    }

    /// Adds text; returns what is safe to send and whether a stop string has been reached (the
    /// text before it is sent, it and everything after it are dropped).
    pub fn push(&mut self, text: String) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (text, false);
        }
        self.held.push_str(&text);
        if let Some((at, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
        {
            self.stopped = true;
            self.matched = Some(stop.clone());
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// The stop string that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// The end of the stream: what was held back was not a stop string after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest end of `text` that is a proper beginning of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    stop.char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .filter(|&len| text.ends_with(&stop[..len]))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(pieces: &[&[u8]]) -> (Vec<String>, String) {
        let mut assembler = Utf8Assembler::new();
        let outs: Vec<String> = pieces.iter().map(|p| assembler.push(p)).collect();
        let tail = assembler.finish();
        (outs, tail)
    }

    fn run_stops(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut matcher = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for piece in pieces {
            let (text, stopped) = matcher.push(piece.to_string());
            out.push_str(&text);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&matcher.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_never_sent() {
        assert_eq!(
            run_stops(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), true)
        );
        assert_eq!(
            run_stops(&["다음"], &["하나 다", "음 둘"]),
            ("하나 ".into(), true)
        );
    }

    #[test]
    fn held_text_that_was_not_a_stop_is_sent_at_the_end() {
        assert_eq!(
            run_stops(&["END"], &["abc E", "N"]),
            ("abc EN".into(), false)
        );
        assert_eq!(
            run_stops(&["END"], &["abc EX", "y"]),
            ("abc EXy".into(), false)
        );
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        assert_eq!(run_stops(&["zz", "b"], &["a b zz"]), ("a ".into(), true));
    }

    #[test]
    fn without_stop_strings_text_passes_unchanged() {
        assert_eq!(run_stops(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn hangul_split_into_single_bytes_is_held_until_complete() {
        let bytes = "친환경".as_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let (outs, tail) = assemble(&pieces);
        assert_eq!(outs.concat(), "친환경");
        assert_eq!(tail, "");
        // Only every third byte completes a syllable.
        let emitted: Vec<&String> = outs.iter().filter(|s| !s.is_empty()).collect();
        assert_eq!(emitted, ["친", "환", "경"]);
    }

    #[test]
    fn every_split_of_korean_and_emoji_reassembles_exactly() {
        let text = "텀블러 🌱 사용하기!";
        let bytes = text.as_bytes();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let (outs, tail) = assemble(&[&bytes[..a], &bytes[a..b], &bytes[b..]]);
                assert_eq!(outs.concat() + &tail, text, "split at {a},{b}");
            }
        }
    }

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        let (outs, tail) = assemble(&[b"a\xff", b"b", b"\xc0\xaf", b"c"]);
        assert_eq!(outs.concat() + &tail, "a\u{FFFD}b\u{FFFD}\u{FFFD}c");
    }

    #[test]
    fn a_character_cut_off_at_the_end_becomes_a_replacement() {
        let (outs, tail) = assemble(&[b"ok", &"한".as_bytes()[..2]]);
        assert_eq!(outs.concat(), "ok");
        assert_eq!(tail, "\u{FFFD}");
    }

    #[test]
    fn a_truncated_character_followed_by_ascii_is_replaced_not_held() {
        let (outs, _) = assemble(&[&"한".as_bytes()[..2], b"x"]);
        assert_eq!(outs.concat(), "\u{FFFD}x");
    }
}
