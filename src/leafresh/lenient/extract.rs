//! The extractor's handling of what only unconstrained (`--no-grammar`) output contains: prose
//! around the JSON, code fences, prose lines that start with a key (`- title:`), unquoted tokens,
//! string escapes; and the final `cleanse` pass. Such output degrades to readable text: prose is
//! kept, fences and brackets are dropped, a key line loses its key, escapes are decoded.
//!
//! With the grammar on, all this does is open the JSON at its `{` and carry the whitespace after
//! its `}`: the grammar admits no backslash, no backtick between tokens, no bare token, and
//! leaves `cleanse` nothing to remove.
//!
//! These are methods of the same state machine (`FragmentExtractor`), not a second one, so the
//! modes still hand characters to each other directly; the core calls them from `step` (by
//! mode), `string` (escapes) and `structural` (fences, bare tokens).

use std::mem;
use std::sync::LazyLock;

use regex::Regex;

use crate::leafresh::extract::{Container, Escape, FragmentExtractor, Kind, Mode};

/// The answer's keys, recognised at the start of prose lines (`title: ...`).
pub(in crate::leafresh) const KEYS: [&str; 4] = ["recommend", "challenges", "title", "description"];

/// What the prose modes remember between characters; private to this file, so the JSON core
/// cannot come to depend on it.
#[derive(Debug, Clone)]
pub(in crate::leafresh) struct ProseState {
    /// Nothing visible on the current line yet.
    line_start: bool,
    /// Length of the current run of backticks.
    backticks: usize,
    /// Just after a ``` fence: its language tag (`json`) is dropped.
    fence_lang: bool,
}

impl Default for ProseState {
    fn default() -> Self {
        Self {
            line_start: true,
            backticks: 0,
            fence_lang: false,
        }
    }
}

impl FragmentExtractor {
    /// Consumes code-fence backticks and the language tag after a fence; `true` if `c` was.
    pub(in crate::leafresh) fn fence(&mut self, c: char) -> bool {
        if c == '`' {
            self.prose.backticks += 1;
            self.drop_pending_punctuation();
            return true;
        }
        if self.prose.backticks > 0 {
            self.prose.fence_lang = self.prose.backticks >= 3;
            self.prose.backticks = 0;
        }
        if self.prose.fence_lang {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-') {
                return true;
            }
            self.prose.fence_lang = false;
        }
        false
    }

    /// `Mode::Prose`: outside any JSON container, where text is meant for a person.
    pub(in crate::leafresh) fn prose(&mut self, c: char) {
        if self.fence(c) {
            return;
        }
        match c {
            '{' => self.open(Container::Object { expect_key: true }),
            '[' => self.open(Container::Array),
            // Stray closers, quotes and markdown emphasis carry nothing for a reader.
            '}' | ']' | '"' | '*' => {}
            '#' if self.prose.line_start => {}
            // Kept only if the sentence goes on: a colon before a line break or a JSON block is
            // syntax ("다음과 같습니다:\n```json").
            ',' | ':' => self.pending.push(c),
            '\n' => {
                self.drop_pending_punctuation();
                self.pending.push('\n');
                self.prose.line_start = true;
            }
            c if c.is_whitespace() => self.emit_content(c),
            c if c.is_control() => {}
            c => {
                if self.prose.line_start && head_state(c.encode_utf8(&mut [0; 4])) != Head::No {
                    self.held.push(c);
                    self.mode = Mode::ProseHead;
                    return;
                }
                self.prose.line_start = false;
                self.emit_content(c);
            }
        }
    }

    /// `Mode::ProseHead`: the start of a prose line that may still turn out to be a key.
    pub(in crate::leafresh) fn prose_head(&mut self, c: char) {
        if c == '*' {
            return; // `**title**:` is still a key line
        }
        self.held.push(c);
        match head_state(&self.held) {
            Head::Partial => {}
            Head::Complete => {
                self.held.clear();
                self.resume_prose();
                self.value_end();
            }
            Head::No => self.release_head(),
        }
    }

    /// A held line head turned out to be text (or the stream ended before its colon): it is
    /// read again as prose.
    pub(in crate::leafresh) fn release_head(&mut self) {
        self.resume_prose();
        for c in mem::take(&mut self.held).chars() {
            self.step(c);
        }
    }

    /// Back in prose in the middle of a line (after a JSON block or a line head), where a key
    /// cannot start a line.
    pub(in crate::leafresh) fn resume_prose(&mut self) {
        self.mode = Mode::Prose;
        self.prose.line_start = false;
    }

    /// `Mode::Bare`: an unquoted token in a container, a key if a `:` ends it in key position.
    pub(in crate::leafresh) fn bare(&mut self, c: char, kind: Kind) {
        let ends =
            matches!(c, ',' | '}' | ']' | '{' | '[' | '\n') || (kind == Kind::Key && c == ':');
        if !ends {
            self.content(c, kind);
            return;
        }
        self.mode = Mode::Structural;
        match kind {
            Kind::Key => {
                let held = mem::take(&mut self.held);
                if c == ':' {
                    self.set_expect_key(false);
                    return;
                }
                self.release_value(&held);
            }
            Kind::Value => self.value_end(),
        }
        if c == '\n' {
            // A line break ends an unquoted value as a comma would (YAML-like objects).
            self.set_expect_key(true);
        } else {
            self.structural(c);
        }
    }

    /// The character after a backslash in a string.
    pub(in crate::leafresh) fn after_backslash(&mut self, c: char, quote: char, kind: Kind) {
        self.set_escape(quote, kind, Escape::None);
        match c {
            'n' => self.content('\n', kind),
            't' => self.content(' ', kind),
            'r' | 'b' | 'f' => {}
            'u' => self.set_escape(quote, kind, Escape::Unicode { digits: 0, code: 0 }),
            c => self.content(c, kind), // \" \\ \/ \' and lenient others
        }
    }

    /// A character of a `\uXXXX` escape, `digits` digits (their value `code`) read so far.
    pub(in crate::leafresh) fn unicode_digit(
        &mut self,
        c: char,
        quote: char,
        kind: Kind,
        digits: u8,
        code: u32,
    ) {
        match c.to_digit(16) {
            Some(d) if digits == 3 => {
                self.set_escape(quote, kind, Escape::None);
                self.unicode_escape(code * 16 + d, kind);
            }
            Some(d) => self.set_escape(
                quote,
                kind,
                Escape::Unicode {
                    digits: digits + 1,
                    code: code * 16 + d,
                },
            ),
            None => {
                // A broken \u escape: drop it and read `c` as ordinary string text.
                self.set_escape(quote, kind, Escape::None);
                self.high_surrogate = None;
                self.string(c, quote, kind, Escape::None);
            }
        }
    }

    fn set_escape(&mut self, quote: char, kind: Kind, escape: Escape) {
        self.mode = Mode::Str {
            quote,
            kind,
            escape,
        };
    }

    /// JSON writes a character beyond the BMP as two `\u` escapes, a surrogate pair: the high
    /// half waits for the low one, and a half without its partner is dropped.
    fn unicode_escape(&mut self, code: u32, kind: Kind) {
        match code {
            0xD800..=0xDBFF => self.high_surrogate = Some(code),
            0xDC00..=0xDFFF => {
                if let Some(high) = self.high_surrogate.take() {
                    let combined = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00);
                    if let Some(c) = char::from_u32(combined) {
                        self.content(c, kind);
                    }
                }
            }
            code => {
                if let Some(c) = char::from_u32(code) {
                    self.content(c, kind);
                }
            }
        }
    }

    fn drop_pending_punctuation(&mut self) {
        self.pending.retain(char::is_whitespace);
    }
}

/// Whether the start of a prose line is one of the answer's keys (`title:`, `- "description":`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Could still become a key line.
    Partial,
    /// It is a key line; the key and its colon are dropped.
    Complete,
    /// Ordinary text.
    No,
}

fn head_state(head: &str) -> Head {
    let s = head
        .strip_prefix(['-', '•'])
        .map(str::trim_start)
        .unwrap_or(head);
    let s = s.strip_prefix(['"', '\'']).unwrap_or(s);
    let word_len = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let (word, rest) = s.split_at(word_len);
    let word = word.to_ascii_lowercase();
    if rest.is_empty() {
        return if KEYS.iter().any(|k| k.starts_with(&word)) {
            Head::Partial
        } else {
            Head::No
        };
    }
    if !KEYS.contains(&word.as_str()) {
        return Head::No;
    }
    let rest = rest
        .strip_prefix(['"', '\''])
        .unwrap_or(rest)
        .trim_start_matches([' ', '\t']);
    match rest {
        "" => Head::Partial,
        ":" => Head::Complete,
        _ => Head::No,
    }
}

static SYNTAX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"```[A-Za-z0-9_+-]*|["{}\[\]`]"#).expect("valid regex"));

/// The final cleansing pass on a fragment: removes code fences (with their language tag), double
/// quotes, braces, brackets and backticks. A no-op on what `FragmentExtractor` produces; a
/// safety net that also serves callers holding text from elsewhere.
pub fn cleanse(fragment: &str) -> String {
    SYNTAX.replace_all(fragment, "").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leafresh::extract::tests::{assert_split_invariant, extract};

    #[test]
    fn fenced_answer_with_prose_gives_the_same_text_for_every_split() {
        let text = "다음은 추천입니다:\n```json\n{\"recommend\": \"걸어서 출근해요.\", \"challenges\": [{\"title\": \"도보 출근\", \"description\": \"한 정거장 먼저 내려요.\"}]}\n```\n도움이 되길 바라요!";
        assert_split_invariant(
            text,
            "다음은 추천입니다\n걸어서 출근해요.\n도보 출근\n한 정거장 먼저 내려요.\n도움이 되길 바라요!",
        );
    }

    #[test]
    fn single_quoted_json_and_trailing_commas() {
        let text = "{'recommend': '텀블러를 써요.', 'challenges': [{'title': '텀블러', 'description': '컵 대신 써요.',},],}";
        assert_split_invariant(text, "텀블러를 써요.\n텀블러\n컵 대신 써요.");
    }

    #[test]
    fn unquoted_keys_are_dropped() {
        assert_eq!(
            extract(
                "{recommend: 텀블러를 써요, challenges: [{title: 텀블러, description: 컵 대신}]}"
            ),
            "텀블러를 써요\n텀블러\n컵 대신"
        );
    }

    #[test]
    fn numbered_title_description_lines_stay_readable() {
        let text = "추천 챌린지입니다.\n1. 텀블러 사용하기: 일회용 컵 대신 텀블러를 사용해요.\n2. **장바구니 챙기기**: 비닐봉투를 거절해요.\n";
        assert_split_invariant(
            text,
            "추천 챌린지입니다.\n1. 텀블러 사용하기: 일회용 컵 대신 텀블러를 사용해요.\n2. 장바구니 챙기기: 비닐봉투를 거절해요.",
        );
    }

    #[test]
    fn yaml_like_key_lines_lose_their_keys() {
        let text = "recommend: 걸어서 출근해요.\nchallenges:\n- title: 도보 출근\n  description: 한 정거장 먼저 내려요.\n- \"Title\": 계단 이용";
        assert_split_invariant(
            text,
            "걸어서 출근해요.\n도보 출근\n한 정거장 먼저 내려요.\n계단 이용",
        );
        // A line that only starts like a key is text.
        assert_eq!(
            extract("titles are short\n- 텀블러"),
            "titles are short\n- 텀블러"
        );
        assert_eq!(extract("desc"), "desc");
    }

    #[test]
    fn markdown_headers_and_stray_syntax_are_removed() {
        assert_eq!(
            extract("## 오늘의 추천\n]] 텀블러 \"쓰기\" }"),
            "오늘의 추천\n 텀블러 쓰기"
        );
    }

    #[test]
    fn unicode_escapes_and_surrogate_pairs_are_decoded() {
        assert_eq!(
            extract(r#"{"recommend": "\uD55C\uAE00 \uD83C\uDF31\t끝\/"}"#),
            "한글 🌱 끝/"
        );
        // A broken escape is dropped, the text around it kept.
        assert_eq!(extract(r#"{"recommend": "a\uZZb"}"#), "aZZb");
    }

    #[test]
    fn cleanse_strips_fences_quotes_and_brackets() {
        assert_eq!(cleanse("```json {\"a\": [1]}```"), " a: 1");
        assert_eq!(cleanse("텀블러, 컵"), "텀블러, 컵");
    }
}
