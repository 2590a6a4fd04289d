//! The chat template's markup tokens, and client text kept from becoming one.
//!
//! Markup is every token that only the template's own text may produce:
//! - control and unknown tokens (`<s>`, `[INST]`, `<start_of_turn>`), which llama.cpp's tokenizer
//!   makes only with special-token parsing on, so plain-text tokenizing never makes them;
//! - user-defined tokens the template writes (gpt-oss's `<|start|>`, `<|message|>`): llama.cpp
//!   matches user-defined tokens in any text, special parsing or not, so client text that spells
//!   one would become it. Such a token, where plain-text tokenizing made it, is replaced by the
//!   tokens that spell its text character by character ([`Markup::unmark`]).
//!
//! User-defined tokens the template does not write stay what they are: Gemma has 165 of them,
//! runs of newlines and tabs, which are ordinary text. A whitespace-only token is never markup.

use std::collections::{HashMap, HashSet};

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

use super::template::{SpecialText, SpecialTexts};

pub struct Markup {
    /// Every markup token as llama.cpp's tokenizer matches it in text, longest first.
    specials: SpecialTexts<LlamaToken>,
    /// Each user-defined markup token, and the tokens that spell its text as plain text.
    spellings: HashMap<LlamaToken, Vec<LlamaToken>>,
}

impl Markup {
    /// The markup of the template whose own text (source and a rendering) is `own_text`.
    pub fn find(llama: &LlamaModel, own_text: &str) -> Self {
        let vocab = llama.vocab();
        let mut specials = Vec::new();
        let mut user_defined = Vec::new();
        for token in vocab.tokens() {
            let attr = vocab.attr(token);
            let control = attr.intersects(LlamaTokenAttr::Control | LlamaTokenAttr::Unknown);
            if !control && !attr.contains(LlamaTokenAttr::UserDefined) {
                continue;
            }
            let Some(text) = vocab
                .text(token)
                .and_then(|t| t.to_str().ok().map(str::to_owned))
            else {
                continue;
            };
            if !control {
                if text.trim().is_empty() || !own_text.contains(&text) {
                    continue;
                }
                user_defined.push((token, text.clone()));
            }
            specials.push(SpecialText {
                text,
                token,
                lstrip: attr.contains(LlamaTokenAttr::LStrip),
                rstrip: attr.contains(LlamaTokenAttr::RStrip),
            });
        }
        let spellings = spellings(llama, &user_defined);
        Self {
            specials: SpecialTexts::new(specials),
            spellings,
        }
    }

    /// Every markup token as the tokenizer matches it in text, longest first.
    pub fn specials(&self) -> &SpecialTexts<LlamaToken> {
        &self.specials
    }

    /// Whether `token` is markup: client text never becomes it.
    pub fn contains(&self, llama: &LlamaModel, token: LlamaToken) -> bool {
        self.spellings.contains_key(&token)
            || llama
                .vocab()
                .attr(token)
                .intersects(LlamaTokenAttr::Control | LlamaTokenAttr::Unknown)
    }

    /// The tokens of a plain-text tokenizing with every user-defined markup token in them spelled
    /// out instead (one pass; nothing to do for most vocabularies).
    pub fn unmark(&self, tokens: Vec<LlamaToken>) -> Vec<LlamaToken> {
        if !tokens.iter().any(|t| self.spellings.contains_key(t)) {
            return tokens;
        }
        let mut out = Vec::with_capacity(tokens.len() + 8);
        for token in tokens {
            match self.spellings.get(&token) {
                Some(spelled) => out.extend_from_slice(spelled),
                None => out.push(token),
            }
        }
        out
    }
}

/// For each `(token, text)`, tokens that spell `text` one character at a time: the vocabulary's
/// ordinary token for the character, else its bytes as byte-fallback tokens. None of them can be
/// a user-defined token, so the text stays plain whatever the tokenizer would have matched.
fn spellings(
    llama: &LlamaModel,
    markup: &[(LlamaToken, String)],
) -> HashMap<LlamaToken, Vec<LlamaToken>> {
    if markup.is_empty() {
        return HashMap::new();
    }
    let needed: HashSet<char> = markup.iter().flat_map(|(_, text)| text.chars()).collect();
    let vocab = llama.vocab();
    let mut by_char: HashMap<char, LlamaToken> = HashMap::new();
    let mut by_byte: [Option<LlamaToken>; 256] = [None; 256];
    let mut piece = Vec::new();
    for token in vocab.tokens() {
        let attr = vocab.attr(token);
        let (normal, byte) = (
            attr.contains(LlamaTokenAttr::Normal),
            attr.contains(LlamaTokenAttr::Byte),
        );
        if !normal && !byte {
            continue;
        }
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        if byte && piece.len() == 1 {
            by_byte[piece[0] as usize].get_or_insert(token);
        }
        if let Ok(text) = std::str::from_utf8(&piece) {
            let mut chars = text.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                if normal && needed.contains(&c) {
                    by_char.entry(c).or_insert(token);
                }
            }
        }
    }
    markup
        .iter()
        .map(|(token, text)| {
            let spelled = text
                .chars()
                .flat_map(|c| match by_char.get(&c) {
                    Some(&t) => vec![t],
                    None => {
                        let mut utf8 = [0; 4];
                        let bytes = c.encode_utf8(&mut utf8).as_bytes();
                        // A vocabulary without the character nor byte fallback: its own
                        // tokenizing of the lone character (shorter than any markup text).
                        bytes
                            .iter()
                            .map(|&b| by_byte[b as usize])
                            .collect::<Option<Vec<_>>>()
                            .unwrap_or_else(|| vocab.tokenize(bytes, false, false))
                    }
                })
                .collect();
            (*token, spelled)
        })
        .collect()
}
