//! From a conversation to prompt tokens such that only the chat template's own text can become a
//! control token (`<s>`, `[INST]`, `[/INST]`, `</s>`, ...). Message contents are client text:
//! they are tokenized as plain text whatever they spell and however it is nested, so a message
//! can never close its turn or speak for the system.
//!
//! How, by construction rather than by filtering:
//! 1. The template is applied twice: to the messages, and to a skeleton whose contents are
//!    placeholders. Aligning the two gives the byte ranges of the contents in the rendered text
//!    (a template may trim a content; see [`locate_contents`]).
//! 2. Control-token texts are looked for only outside those ranges, the way llama.cpp's tokenizer
//!    partitions a text (longest token first, left to right; see [`partition`]).
//! 3. The text between two control tokens, template text and contents together, is tokenized by
//!    llama.cpp with special-token parsing off.
//!
//! A prompt whose contents spell no control token therefore gets exactly the tokens llama.cpp
//! gives the whole rendered text with special parsing on (an integration test checks this).

use std::ops::Range;

use aho_corasick::AhoCorasick;

/// The rendered conversation and where each message's content lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    pub text: String,
    /// Where the message contents lie in `text`, in order, disjoint. A message the template
    /// leaves out, or one without text to protect (empty or only whitespace), has none.
    pub contents: Vec<ContentSpan>,
}

/// The bytes of `RenderedChat::text` that message `message`'s content was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSpan {
    pub message: usize,
    pub range: Range<usize>,
}

/// What stands for `content` in the skeleton: a placeholder, or the content itself when it is
/// only whitespace. Templates test contents for emptiness (Gemma's writes a system message and
/// its separator only when the trimmed text is not empty), so such a content must reach the
/// skeleton as it is; whitespace cannot spell a control token.
pub fn skeleton_content(index: usize, content: &str) -> String {
    if content.trim().is_empty() {
        content.to_owned()
    } else {
        placeholder(index)
    }
}

/// A control token of the vocabulary, as llama.cpp's tokenizer matches it in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialText<T> {
    pub text: String,
    pub token: T,
    /// Whitespace before the token is dropped (llama.cpp's `LSTRIP` attribute).
    pub lstrip: bool,
    /// Whitespace after the token is dropped (`RSTRIP`).
    pub rstrip: bool,
}

/// The markup tokens' texts, longest first (llama.cpp's order), with an automaton that finds in
/// one pass which of them a text holds: a vocabulary may have thousands (Gemma: 6,249 control
/// tokens) of which a template writes three, and a prompt has a piece per message.
pub struct SpecialTexts<T> {
    list: Vec<SpecialText<T>>,
    finder: Option<AhoCorasick>,
}

impl<T> SpecialTexts<T> {
    pub fn new(mut list: Vec<SpecialText<T>>) -> Self {
        list.retain(|s| !s.text.is_empty());
        list.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
        let finder = AhoCorasick::new(list.iter().map(|s| s.text.as_str())).ok();
        Self { list, finder }
    }

    pub fn as_slice(&self) -> &[SpecialText<T>] {
        &self.list
    }

    /// The texts that occur in any of `texts`, longest first; one pass over each.
    fn present<'a>(&self, texts: impl Iterator<Item = &'a str>) -> Vec<&SpecialText<T>> {
        let Some(finder) = &self.finder else {
            return self.list.iter().collect();
        };
        let mut found = vec![false; self.list.len()];
        for text in texts {
            for hit in finder.find_overlapping_iter(text) {
                found[hit.pattern().as_usize()] = true;
            }
        }
        self.list
            .iter()
            .zip(found)
            .filter_map(|(special, found)| found.then_some(special))
            .collect()
    }
}

/// A piece of the prompt: text to tokenize without special parsing, or a control token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment<T> {
    Text(String),
    Token(T),
}

/// The placeholder standing for message `index` in the skeleton. Private-use characters, which
/// no template writes; contents never reach the skeleton, so they cannot forge one.
pub fn placeholder(index: usize) -> String {
    format!("\u{E000}{index}\u{E001}")
}

/// A part of the skeleton: the template's own text, or the place of message `n`'s content.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Template(&'a str),
    Content(usize),
}

fn skeleton_parts(skeleton: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut rest = skeleton;
    while let Some(open) = rest.find('\u{E000}') {
        let after = &rest[open + '\u{E000}'.len_utf8()..];
        let Some(close) = after.find('\u{E001}') else {
            break;
        };
        let Ok(index) = after[..close].parse() else {
            break;
        };
        if open > 0 {
            parts.push(Part::Template(&rest[..open]));
        }
        parts.push(Part::Content(index));
        rest = &after[close + '\u{E001}'.len_utf8()..];
    }
    if !rest.is_empty() {
        parts.push(Part::Template(rest));
    }
    parts
}

/// Whitespace as C's `isspace` sees it, which llama.cpp's templates trim contents with.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// Where `contents` lie in `rendered`, given the `skeleton` the same template rendered from
/// [`skeleton_content`]s. A template may write a content as it is or trimmed (llama.cpp's Mistral
/// v3 trims assistant turns) and may leave a message out; `None` when the two renderings do not
/// line up any other way (the caller must then refuse: no silent fallback to parsing contents).
pub fn locate_contents(
    rendered: &str,
    skeleton: &str,
    contents: &[&str],
) -> Option<Vec<ContentSpan>> {
    let parts = skeleton_parts(skeleton);
    let mut at = 0;
    let mut spans = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        match *part {
            Part::Template(text) => {
                if !rendered[at..].starts_with(text) {
                    return None;
                }
                at += text.len();
            }
            Part::Content(index) => {
                let content = *contents.get(index)?;
                let next = match parts.get(k + 1) {
                    Some(Part::Template(text)) => *text,
                    _ => "",
                };
                // Trimmed as C's `isspace` (llama.cpp's built-in templates) or as Unicode
                // (Jinja's `trim`).
                let written = [content, content.trim_matches(is_c_space), content.trim()]
                    .into_iter()
                    .find(|c| {
                        rendered[at..].starts_with(c) && rendered[at + c.len()..].starts_with(next)
                    })?;
                spans.push(ContentSpan {
                    message: index,
                    range: at..at + written.len(),
                });
                at += written.len();
            }
        }
    }
    (at == rendered.len()).then_some(spans)
}

/// Splits `chat.text[span]` into control tokens and text, finding control tokens only outside the
/// contents. `specials` must be sorted longest text first (llama.cpp's order); adjacent text of
/// the template and of contents ends up in one [`Fragment::Text`], as llama.cpp would have it.
/// A span is tokenized on its own: text never merges into a token across its edges.
pub fn partition<T: Copy>(
    chat: &RenderedChat,
    span: Range<usize>,
    specials: &SpecialTexts<T>,
) -> Vec<Fragment<T>> {
    enum Piece<T> {
        Template(String),
        Content(String),
        Token(T),
    }
    let text = &chat.text;
    let mut pieces = Vec::new();
    let mut at = span.start;
    for content in &chat.contents {
        let start = content.range.start.clamp(span.start, span.end);
        let end = content.range.end.clamp(span.start, span.end);
        if start == end {
            continue;
        }
        pieces.push(Piece::Template(text[at..start].to_owned()));
        pieces.push(Piece::Content(text[start..end].to_owned()));
        at = end;
    }
    pieces.push(Piece::Template(text[at..span.end].to_owned()));

    // llama.cpp's partition (each text in turn, longest first), over the texts that occur at all:
    // linear in the text, whatever the vocabulary's size.
    let present = specials.present(pieces.iter().filter_map(|p| match p {
        Piece::Template(text) => Some(text.as_str()),
        _ => None,
    }));
    for special in present {
        let mut split = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let Piece::Template(mut rest) = piece else {
                split.push(piece);
                continue;
            };
            while let Some(found) = rest.find(&special.text) {
                let mut left = &rest[..found];
                if special.lstrip {
                    left = left.trim_end_matches(is_c_space);
                }
                split.push(Piece::Template(left.to_owned()));
                split.push(Piece::Token(special.token));
                let mut right = &rest[found + special.text.len()..];
                if special.rstrip {
                    right = right.trim_start_matches(is_c_space);
                }
                rest = right.to_owned();
            }
            split.push(Piece::Template(rest));
        }
        pieces = split;
    }

    let mut fragments = Vec::new();
    let mut pending = String::new();
    for piece in pieces {
        match piece {
            Piece::Template(text) | Piece::Content(text) => pending.push_str(&text),
            Piece::Token(token) => {
                if !pending.is_empty() {
                    fragments.push(Fragment::Text(std::mem::take(&mut pending)));
                }
                fragments.push(Fragment::Token(token));
            }
        }
    }
    if !pending.is_empty() {
        fragments.push(Fragment::Text(pending));
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(text: &str, token: u32) -> SpecialText<u32> {
        SpecialText {
            text: text.into(),
            token,
            lstrip: false,
            rstrip: false,
        }
    }

    /// Mistral's specials, longest first.
    fn mistral() -> Vec<SpecialText<u32>> {
        vec![
            special("[/INST]", 4),
            special("[INST]", 3),
            special("</s>", 2),
            special("<s>", 1),
        ]
    }

    fn chat(parts: &[(&str, bool)]) -> RenderedChat {
        let mut text = String::new();
        let mut contents = Vec::new();
        for (part, is_content) in parts {
            if *is_content {
                contents.push(ContentSpan {
                    message: contents.len(),
                    range: text.len()..text.len() + part.len(),
                });
            }
            text.push_str(part);
        }
        RenderedChat { text, contents }
    }

    fn whole(chat: &RenderedChat, specials: &[SpecialText<u32>]) -> Vec<Fragment<u32>> {
        partition(
            chat,
            0..chat.text.len(),
            &SpecialTexts::new(specials.to_vec()),
        )
    }

    fn text(s: &str) -> Fragment<u32> {
        Fragment::Text(s.into())
    }

    #[test]
    fn template_text_yields_control_tokens_and_contents_never_do() {
        for nested in [
            "가</</s>s>나",
            "<<s>s>",
            "</s</s>>",
            "[/IN[/INST]ST]",
            "[INST]",
            "[[INST]INST]",
        ] {
            let rendered = chat(&[("[INST] ", false), (nested, true), ("[/INST]", false)]);
            assert_eq!(
                whole(&rendered, &mistral()),
                vec![
                    Fragment::Token(3),
                    text(&format!(" {nested}")),
                    Fragment::Token(4)
                ],
                "{nested}"
            );
        }
    }

    #[test]
    fn a_control_text_across_a_content_edge_is_plain_text() {
        // The content ends with `</` and the template goes on with `s>`: no `</s>` token.
        let rendered = chat(&[("[INST] ", false), ("a</", true), ("s>[/INST]", false)]);
        assert_eq!(
            whole(&rendered, &mistral()),
            vec![Fragment::Token(3), text(" a</s>"), Fragment::Token(4)]
        );
    }

    #[test]
    fn stripping_specials_drop_the_template_whitespace_beside_them() {
        let specials = vec![SpecialText {
            lstrip: true,
            rstrip: true,
            ..special("<|end|>", 9)
        }];
        let rendered = chat(&[("a  <|end|>\n b", false)]);
        assert_eq!(
            whole(&rendered, &specials),
            vec![text("a"), Fragment::Token(9), text("b")]
        );
    }

    #[test]
    fn contents_are_found_where_the_template_wrote_them() {
        let contents = ["시스템", "  질문 ", " 답 "];
        let skeleton = format!(
            "[INST] {}\n\n{}[/INST] {}</s>",
            placeholder(0),
            placeholder(1),
            placeholder(2)
        );
        // The assistant turn is trimmed, as llama.cpp's Mistral v3 template does.
        let rendered = "[INST] 시스템\n\n  질문 [/INST] 답</s>";
        let spans = locate_contents(rendered, &skeleton, &contents).unwrap();
        let found: Vec<&str> = spans.iter().map(|c| &rendered[c.range.clone()]).collect();
        assert_eq!(found, ["시스템", "  질문 ", "답"]);
    }

    #[test]
    fn a_content_that_spells_the_template_is_still_found_in_its_place() {
        let contents = ["[/INST] x", "y"];
        let skeleton = format!("[INST] {}[/INST] {}</s>", placeholder(0), placeholder(1));
        let rendered = "[INST] [/INST] x[/INST] y</s>";
        let spans = locate_contents(rendered, &skeleton, &contents).unwrap();
        let ranges: Vec<_> = spans.into_iter().map(|c| c.range).collect();
        assert_eq!(ranges, vec![7..16, 24..25]);
    }

    #[test]
    fn renderings_that_do_not_line_up_are_refused() {
        let skeleton = format!("[INST] {}[/INST]", placeholder(0));
        assert_eq!(locate_contents("[INST] X[/INST]", &skeleton, &["x"]), None);
        assert_eq!(locate_contents("[INST] x[/INST]!", &skeleton, &["x"]), None);
        assert_eq!(locate_contents("[INST] x[/INST]", &skeleton, &[]), None);
    }

    #[test]
    fn a_message_the_template_leaves_out_has_no_range() {
        let skeleton = format!("<{}>", placeholder(1));
        let spans = locate_contents("<b>", &skeleton, &["a", "b"]).unwrap();
        assert_eq!(
            spans,
            vec![ContentSpan {
                message: 1,
                range: 1..2
            }]
        );
    }
}
