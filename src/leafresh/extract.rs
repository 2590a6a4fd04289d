//! The streaming cleansing pipeline: the model's text, arriving in arbitrary pieces, becomes
//! readable fragments for the `challenge` events.
//!
//! A person waiting for the answer should read the values of the JSON (the recommendation, each
//! title, each description), never its syntax or its keys. The original cleaned every token
//! piece separately with regexes, which glued words together (spaces were stripped per piece) and
//! leaked keys whose quotes a piece boundary had split off. Here a character-level state machine
//! follows the JSON structure across pieces, so the output does not depend on where pieces split:
//! - a string in key position is held back until what follows it (`:` or not) says whether it
//!   was a key; value strings stream character by character;
//! - whitespace is carried over until a visible character follows, so no fragment is blank and
//!   no trailing space is lost between fragments;
//! - consecutive values are separated by `SEPARATOR` so their words do not run together.
//!
//! This file is the JSON-following core, all that the default path (the answer grammar) needs.
//! What only unconstrained `--no-grammar` output has (prose around the JSON, code fences, line
//! heads like `- title:`, unquoted tokens, string escapes) and the final regex pass `cleanse` are
//! in `lenient::extract`; `step` and `string` call into it.

use std::mem;

pub use super::lenient::extract::cleanse;
use super::lenient::extract::ProseState;

/// Put between two values (and between prose and a value).
pub const SEPARATOR: char = '\n';

/// Never part of a fragment: JSON syntax and code-fence backticks.
const FORBIDDEN: [char; 6] = ['"', '{', '}', '[', ']', '`'];

/// Whether a string is in key position (held back until decided) or a value (streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Key,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Container {
    Object { expect_key: bool },
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    None,
    Backslash,
    Unicode { digits: u8, code: u32 },
}

/// The extractor's modes; `Prose`, `ProseHead` and `Bare` are handled in `lenient::extract`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Outside any JSON container: text meant for a person.
    Prose,
    /// At the start of a prose line, holding (in `held`) what may be a key like `- title:`.
    ProseHead,
    /// Inside a container, between tokens.
    Structural,
    /// Inside a quoted string.
    Str {
        quote: char,
        kind: Kind,
        escape: Escape,
    },
    /// A string in key position has closed (its text is in `held`); the next visible character
    /// decides: `:` means it was a key.
    AfterKey,
    /// An unquoted token inside a container.
    Bare { kind: Kind },
}

/// Turns model text pieces into readable fragments. Feed every piece to `push`, then call
/// `finish` once at the end of generation.
#[derive(Debug, Clone)]
pub struct FragmentExtractor {
    pub(super) mode: Mode,
    stack: Vec<Container>,
    /// Text held back until it can be classified (a key candidate or a prose line head).
    pub(super) held: String,
    /// Whitespace (and, in prose, `,` `:`) seen since the last visible character; written out
    /// only when a visible character of the same value follows.
    pub(super) pending: String,
    /// A value ended after something was emitted: the next visible character starts a new one.
    need_separator: bool,
    emitted_any: bool,
    /// Line starts and code fences, for the prose modes.
    pub(super) prose: ProseState,
    /// A `\uD8xx` escape waiting for its low half.
    pub(super) high_surrogate: Option<u32>,
    /// Output of the current `push`.
    out: String,
}

impl Default for FragmentExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FragmentExtractor {
    /// An extractor at the start of a reply (in prose, at the start of a line).
    pub fn new() -> Self {
        Self {
            mode: Mode::Prose,
            stack: Vec::new(),
            held: String::new(),
            pending: String::new(),
            need_separator: false,
            emitted_any: false,
            prose: ProseState::default(),
            high_surrogate: None,
            out: String::new(),
        }
    }

    /// Feeds one piece of model text; returns the readable text that is now certain, or `None`
    /// when there is none yet (nothing visible, or only text that is still held back).
    pub fn push(&mut self, piece: &str) -> Option<String> {
        for c in piece.chars() {
            self.step(c);
        }
        self.take_fragment()
    }

    /// Ends the stream: releases held-back prose, drops an unfinished key and trailing
    /// whitespace. The extractor is then reset and can be reused.
    pub fn finish(&mut self) -> Option<String> {
        match self.mode {
            // A line that began like a key but never got its colon is just text.
            Mode::ProseHead => self.release_head(),
            // An unfinished key, or a string in key position that nothing followed: a reply cut
            // off in the middle of the JSON. Showing it could show a key.
            Mode::AfterKey
            | Mode::Str {
                kind: Kind::Key, ..
            }
            | Mode::Bare { kind: Kind::Key } => self.held.clear(),
            _ => {}
        }
        let fragment = self.take_fragment();
        *self = Self::new();
        fragment
    }

    fn take_fragment(&mut self) -> Option<String> {
        let raw = mem::take(&mut self.out);
        let cleaned = cleanse(&raw);
        if cleaned.trim().is_empty() {
            // Whitespace only (cannot happen from the state machine, which emits whitespace just
            // before a visible character; kept for the regex pass): carry it forward.
            self.pending.insert_str(0, &cleaned);
            return None;
        }
        Some(cleaned)
    }

    pub(super) fn step(&mut self, c: char) {
        match self.mode {
            Mode::Prose => self.prose(c),
            Mode::ProseHead => self.prose_head(c),
            Mode::Structural => self.structural(c),
            Mode::Str {
                quote,
                kind,
                escape,
            } => self.string(c, quote, kind, escape),
            Mode::AfterKey => self.after_key(c),
            Mode::Bare { kind } => self.bare(c, kind),
        }
    }

    pub(super) fn open(&mut self, container: Container) {
        self.value_end();
        self.stack.push(container);
        self.mode = Mode::Structural;
    }

    pub(super) fn structural(&mut self, c: char) {
        if self.fence(c) {
            return;
        }
        match c {
            '{' => self.open(Container::Object { expect_key: true }),
            '[' => self.open(Container::Array),
            '}' | ']' => {
                self.stack.pop();
                self.set_expect_key(false);
                if self.stack.is_empty() {
                    self.resume_prose();
                }
            }
            ',' => self.set_expect_key(true),
            ':' => self.set_expect_key(false),
            '"' | '\'' => {
                self.mode = Mode::Str {
                    quote: c,
                    kind: self.position(),
                    escape: Escape::None,
                }
            }
            c if c.is_whitespace() || c.is_control() => {}
            c => {
                let kind = self.position();
                self.mode = Mode::Bare { kind };
                self.bare(c, kind);
            }
        }
    }

    /// Whether a string starting here is a key candidate.
    fn position(&self) -> Kind {
        match self.stack.last() {
            Some(Container::Object { expect_key: true }) => Kind::Key,
            _ => Kind::Value,
        }
    }

    pub(super) fn set_expect_key(&mut self, value: bool) {
        if let Some(Container::Object { expect_key }) = self.stack.last_mut() {
            *expect_key = value;
        }
    }

    pub(super) fn string(&mut self, c: char, quote: char, kind: Kind, escape: Escape) {
        match escape {
            // Only unconstrained output has escapes: the grammar admits no backslash.
            Escape::Backslash => self.after_backslash(c, quote, kind),
            Escape::Unicode { digits, code } => self.unicode_digit(c, quote, kind, digits, code),
            Escape::None if c == quote => match kind {
                Kind::Value => {
                    self.value_end();
                    self.mode = Mode::Structural;
                }
                Kind::Key => self.mode = Mode::AfterKey,
            },
            Escape::None if c == '\\' => {
                self.mode = Mode::Str {
                    quote,
                    kind,
                    escape: Escape::Backslash,
                }
            }
            Escape::None => self.content(c, kind),
        }
    }

    fn after_key(&mut self, c: char) {
        if c.is_whitespace() {
            return;
        }
        let held = mem::take(&mut self.held);
        self.mode = Mode::Structural;
        self.set_expect_key(false);
        if c == ':' {
            return; // it was a key: dropped
        }
        // Not followed by a colon: it was a value in the wrong place; show it.
        self.release_value(&held);
        self.structural(c);
    }

    pub(super) fn content(&mut self, c: char, kind: Kind) {
        self.high_surrogate = None;
        match kind {
            Kind::Key => self.held.push(c),
            Kind::Value => self.emit_content(c),
        }
    }

    pub(super) fn release_value(&mut self, text: &str) {
        for c in text.chars() {
            self.emit_content(c);
        }
        self.value_end();
    }

    /// One character of a value (or of prose): whitespace waits in `pending`, invisible and
    /// syntax characters are dropped, a visible character is written after what waited.
    pub(super) fn emit_content(&mut self, c: char) {
        if c == '\r' {
            return;
        }
        if c.is_whitespace() {
            self.pending.push(c);
            return;
        }
        if c.is_control() || FORBIDDEN.contains(&c) {
            return;
        }
        if self.need_separator {
            self.out.push(SEPARATOR);
            self.need_separator = false;
        } else if self.emitted_any {
            self.out.push_str(&self.pending);
        }
        self.pending.clear();
        self.out.push(c);
        self.emitted_any = true;
    }

    /// A value (or a stretch of prose) ended: its trailing whitespace is dropped and the next
    /// visible character starts after a separator.
    pub(super) fn value_end(&mut self) {
        self.pending.clear();
        if self.emitted_any {
            self.need_separator = true;
        }
    }
}

/// Shared with `lenient::extract`'s tests.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::leafresh::lenient::extract::KEYS;

    pub(in crate::leafresh) fn extract_pieces<'a>(
        pieces: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut x = FragmentExtractor::new();
        let mut out: Vec<String> = pieces.into_iter().filter_map(|p| x.push(p)).collect();
        out.extend(x.finish());
        out
    }

    pub(in crate::leafresh) fn extract(text: &str) -> String {
        extract_pieces([text]).concat()
    }

    const ANSWER: &str = r#"{"recommend": "사무실에서 바로 할 수 있는 디지털 탄소 줄이기예요.", "challenges": [{"title": "메일함 비우기", "description": "오래된 메일을 지워 저장 공간을 줄여요."}, {"title": "화면 밝기 낮추기", "description": "모니터 밝기를 70%로 맞춰요!"}, {"title": "클라우드 정리", "description": "안 쓰는 파일을 삭제해요."}]}"#;

    const ANSWER_TEXT: &str = "사무실에서 바로 할 수 있는 디지털 탄소 줄이기예요.\n메일함 비우기\n오래된 메일을 지워 저장 공간을 줄여요.\n화면 밝기 낮추기\n모니터 밝기를 70%로 맞춰요!\n클라우드 정리\n안 쓰는 파일을 삭제해요.";

    /// Pretty-printed with newlines and indentation, one value ending in spaces, an escape.
    const PRETTY: &str = "{\n  \"recommend\" : \"플라스틱을 줄이는 한 주를 시작해요.  \",\n  \"challenges\": [\n    {\n      \"title\": \"장바구니 챙기기\",\n      \"description\": \"장 볼 때 비닐 대신\\n장바구니를 써요.\"\n    },\n    {\"title\": \"텀블러\", \"description\": \"카페에서 텀블러로 주문해요.\"},\n    {\"title\": \"리필 스테이션\", \"description\": \"세제를 리필해 \\\"용기\\\"를 아껴요.\"}\n  ]\n}";

    const PRETTY_TEXT: &str = "플라스틱을 줄이는 한 주를 시작해요.\n장바구니 챙기기\n장 볼 때 비닐 대신\n장바구니를 써요.\n텀블러\n카페에서 텀블러로 주문해요.\n리필 스테이션\n세제를 리필해 용기를 아껴요.";

    /// Every 2- and 3-piece split (at char boundaries) gives the same text as the whole, and no
    /// fragment contains JSON syntax or is blank.
    pub(in crate::leafresh) fn assert_split_invariant(text: &str, expected: &str) {
        assert_eq!(extract(text), expected, "whole input");
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let check = |pieces: &[&str]| {
            let fragments = extract_pieces(pieces.iter().copied());
            for f in &fragments {
                assert!(!f.contains(FORBIDDEN), "syntax in {f:?} for {pieces:?}");
                assert!(!f.trim().is_empty(), "blank fragment for {pieces:?}");
            }
            assert_eq!(fragments.concat(), expected, "pieces {pieces:?}");
        };
        for (n, &i) in bounds.iter().enumerate() {
            check(&[&text[..i], &text[i..]]);
            for &j in &bounds[n..] {
                check(&[&text[..i], &text[i..j], &text[j..]]);
            }
        }
    }

    #[test]
    fn compact_answer_gives_the_same_text_for_every_split() {
        assert_split_invariant(ANSWER, ANSWER_TEXT);
    }

    #[test]
    fn pretty_answer_with_escapes_gives_the_same_text_for_every_split() {
        assert_split_invariant(PRETTY, PRETTY_TEXT);
    }

    #[test]
    fn keys_never_leak_token_by_token() {
        // Typical tokenizer pieces: quotes and keys split apart.
        let pieces = [
            "{\"",
            "rec",
            "ommend",
            "\":",
            " \"",
            "텀",
            "블러",
            " 쓰",
            "기",
            "\",",
            " \"",
            "chall",
            "enges",
            "\":",
            " [{\"",
            "title",
            "\": \"",
            "컵",
            "\", \"",
            "desc",
            "ription",
            "\": \"",
            "컵 대신",
            " 텀블러",
            "\"}]}",
        ];
        let fragments = extract_pieces(pieces);
        let all = fragments.concat();
        assert_eq!(all, "텀블러 쓰기\n컵\n컵 대신 텀블러");
        for key in KEYS {
            assert!(!all.contains(key));
        }
        // Spaces that end a piece are not lost: they come with the next fragment.
        assert!(fragments.contains(&" 쓰".to_owned()), "{fragments:?}");
    }

    #[test]
    fn trailing_whitespace_is_carried_not_emitted_alone() {
        let mut x = FragmentExtractor::new();
        assert_eq!(x.push("{\"recommend\": \"텀블러 "), Some("텀블러".into()));
        assert_eq!(x.push("  "), None);
        assert_eq!(x.push("사용\"}"), Some("   사용".into()));
        assert_eq!(x.finish(), None);
    }

    #[test]
    fn nothing_is_emitted_before_a_key_is_decided() {
        let mut x = FragmentExtractor::new();
        assert_eq!(x.push("{\"title"), None);
        assert_eq!(x.push("\""), None);
        assert_eq!(x.push(" "), None);
        assert_eq!(x.push(": \"제목\""), Some("제목".into()));
    }

    #[test]
    fn a_string_in_key_position_without_colon_is_shown_as_a_value() {
        assert_eq!(
            extract(r#"{"텀블러 쓰기", "장바구니"}"#),
            "텀블러 쓰기\n장바구니"
        );
    }

    #[test]
    fn cut_off_output_shows_the_value_so_far_but_no_partial_key() {
        assert_eq!(extract(r#"{"recommend": "텀블러를 쓰"#), "텀블러를 쓰");
        assert_eq!(extract(r#"{"recommend": "텀블러", "chall"#), "텀블러");
        assert_eq!(extract(r#"{"recommend": "텀블러", "challenges""#), "텀블러");
        assert_eq!(extract(r#"{"recommend": "텀블러", challen"#), "텀블러");
    }

    #[test]
    fn empty_and_whitespace_input_gives_nothing() {
        assert_eq!(extract_pieces(["", " ", "\n"]), Vec::<String>::new());
        assert_eq!(
            extract_pieces([r#"{"recommend": "  ", "challenges": []}"#]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn finish_resets_for_reuse() {
        let mut x = FragmentExtractor::new();
        x.push("{\"recommend\": \"가");
        assert_eq!(x.finish(), None);
        assert_eq!(x.push("{\"title\": \"나\"}"), Some("나".into()));
    }
}
