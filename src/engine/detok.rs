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

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(pieces: &[&[u8]]) -> (Vec<String>, String) {
        let mut assembler = Utf8Assembler::new();
        let outs: Vec<String> = pieces.iter().map(|p| assembler.push(p)).collect();
        let tail = assembler.finish();
        (outs, tail)
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
