//! The tokenizer vocabulary of the tiny test models: SentencePiece style (`tokenizer.ggml.model =
//! "llama"`), with Mistral v0.3's special-token ids and byte fallback.
//!
//! Layout by id: `<unk>` `<s>` `</s>` `[INST]` `[/INST]` (0-4, as in Mistral v0.3), the 256 byte
//! tokens `<0x00>`..`<0xFF>`, `▁`, `▁`-prefixed English words and Korean syllables, bare pieces
//! (JSON syntax, JSON keys, suffixes), the printable ASCII characters, then all 11,172 Hangul
//! syllables U+AC00..U+D7A3. Hangul Compatibility Jamo (ㅅ, ㅂ) and emoji are deliberately absent,
//! so they go through byte fallback and tests exercise UTF-8 split across tokens.
//!
//! llama.cpp's SPM tokenizer only merges two adjacent symbols when their concatenation is a
//! token, so every multi-character piece has all its prefixes in the vocabulary too (otherwise it
//! could never be formed). Scores fall with the id, as in SentencePiece, so merges into
//! `▁`-prefixed pieces win over bare ones.

use std::collections::HashSet;

/// `<unk>`.
pub const UNK_ID: u32 = 0;
/// `<s>`, added at the start of every prompt.
pub const BOS_ID: u32 = 1;
/// `</s>`, end of generation.
pub const EOS_ID: u32 = 2;
/// `[INST]`, control token, id as in Mistral v0.3.
pub const INST_ID: u32 = 3;
/// `[/INST]`, control token, id as in Mistral v0.3.
pub const INST_END_ID: u32 = 4;
/// Id of the byte token `<0x00>`; byte `b` is `FIRST_BYTE_ID + b`.
pub const FIRST_BYTE_ID: u32 = 5;
/// SentencePiece's visible space, U+2581.
pub const SPACE: char = '\u{2581}';
/// The first Hangul syllable (가).
pub const HANGUL_FIRST: char = '\u{AC00}';
/// The last Hangul syllable (힣).
pub const HANGUL_LAST: char = '\u{D7A3}';

/// Syllables that also get a `▁`+syllable piece (a word-initial syllable merges with its space).
pub const SPACED_SYLLABLES: &str = "사텀환재일플에대하이제분오친줄자우개물종";

/// Token type codes as llama.cpp reads them from `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    /// An ordinary piece.
    Normal = 1,
    /// `<unk>`.
    Unknown = 2,
    /// Special tokens: BOS, EOS, `[INST]`...; rendered only on request.
    Control = 3,
    /// A byte-fallback token `<0xNN>`.
    Byte = 6,
}

/// Common English words, stored as `▁word` pieces (the model's text is English, Korean and JSON).
const WORDS: &str = "
    the be to of and a in that have I it for not on with he as you do at this but his by from
    they we say her she or an will my one all would there their what so up out if about who get
    which go me when make can like time no just him know take people into year your good some
    could them see other than then now look only come its over think also back after use two how
    our work first well way even new want because any these give day most us is are was were has
    had been did does said more very here where why should must may might each many much such
    own same few right too try help find tell ask need feel leave call keep let begin seem show
    hear play run move live hold bring write stand set learn change lead understand watch follow
    stop create speak read spend grow open walk win offer remember love consider appear buy wait
    serve die send expect build stay fall cut reach kill remain suggest raise pass sell require
    report decide pull today week month challenge challenges recommend eco green earth planet
    climate carbon energy save reduce reuse recycle plastic paper bag bottle cup tumbler water
    food waste trash bike bus train car light power plant tree home shop local fresh simple easy
    small daily habit goal try yes ok thanks please hello hi user assistant system answer title
    description category label text message content role name value true false null Hello The
    JSON
";

/// Numbers that get `▁`-prefixed pieces, beyond the single digits every text can use.
const NUMBERS: &str = "0 1 2 3 4 5 6 7 8 9 10 20 30 50 100 2024 2025";

/// Pieces without a leading `▁`: JSON syntax, the answer's keys, common suffixes.
const BARE_PIECES: &[&str] = &[
    "{\"",
    "\":",
    "\",",
    "\"}",
    "\":\"",
    "\",\"",
    "[\"",
    "\"]",
    "[{\"",
    "\"},",
    "\"}]",
    "}]",
    "},",
    "\":[",
    "\":{",
    "recommend",
    "challenges",
    "title",
    "description",
    "category",
    "label",
    "content",
    "role",
    "ing",
    "ed",
    "er",
    "ly",
    "tion",
    "s",
    "es",
];

/// A vocabulary: pieces with their scores and token types, indexed by token id.
#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
}

impl Vocab {
    /// The pieces, by id (`tokenizer.ggml.tokens`).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The scores, by id (`tokenizer.ggml.scores`).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// The token types, by id.
    pub fn types(&self) -> &[TokenType] {
        &self.types
    }

    /// The token types as the i32 codes stored in `tokenizer.ggml.token_type`.
    pub fn type_codes(&self) -> Vec<i32> {
        self.types.iter().map(|t| *t as i32).collect()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens (never, for [`tiny_vocab`]).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `piece`, if it is a token.
    pub fn id_of(&self, piece: &str) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t == piece)
            .map(|i| i as u32)
    }

    fn push(&mut self, piece: String, ty: TokenType) {
        self.tokens.push(piece);
        self.types.push(ty);
    }
}

/// Builds the vocabulary described in the module documentation. Deterministic.
pub fn tiny_vocab() -> Vocab {
    let mut vocab = Vocab {
        tokens: Vec::new(),
        scores: Vec::new(),
        types: Vec::new(),
    };
    vocab.push("<unk>".into(), TokenType::Unknown);
    for special in ["<s>", "</s>", "[INST]", "[/INST]"] {
        vocab.push(special.into(), TokenType::Control);
    }
    for byte in 0..=255u8 {
        vocab.push(format!("<0x{byte:02X}>"), TokenType::Byte);
    }

    // Normal pieces, in falling score order. The set keeps them unique and prefix-closed.
    let mut normal = NormalPieces::default();
    normal.add(&SPACE.to_string());
    for word in WORDS.split_whitespace().chain(NUMBERS.split_whitespace()) {
        normal.add(&format!("{SPACE}{word}"));
    }
    for syllable in SPACED_SYLLABLES.chars() {
        normal.add(&format!("{SPACE}{syllable}"));
    }
    for piece in BARE_PIECES {
        normal.add(piece);
    }
    for ascii in '!'..='~' {
        normal.add(&ascii.to_string());
    }
    for syllable in HANGUL_FIRST..=HANGUL_LAST {
        normal.add(&syllable.to_string());
    }

    let n_special = vocab.len();
    vocab.scores = vec![0.0; n_special];
    for (rank, piece) in normal.pieces.into_iter().enumerate() {
        vocab.push(piece, TokenType::Normal);
        vocab.scores.push(-(rank as f32));
    }
    vocab
}

/// Normal pieces in insertion order, each added after all its proper prefixes.
#[derive(Default)]
struct NormalPieces {
    pieces: Vec<String>,
    seen: HashSet<String>,
}

impl NormalPieces {
    fn add(&mut self, piece: &str) {
        // Prefixes first: each is one merge step on the way to the full piece.
        let ends = piece.char_indices().map(|(i, c)| i + c.len_utf8());
        for end in ends {
            let prefix = &piece[..end];
            if self.seen.insert(prefix.to_string()) {
                self.pieces.push(prefix.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_and_bytes_sit_where_llama_cpp_looks_for_them() {
        let v = tiny_vocab();
        assert_eq!(v.tokens()[UNK_ID as usize], "<unk>");
        assert_eq!(v.tokens()[BOS_ID as usize], "<s>");
        assert_eq!(v.tokens()[EOS_ID as usize], "</s>");
        assert_eq!(v.tokens()[INST_ID as usize], "[INST]");
        assert_eq!(v.tokens()[INST_END_ID as usize], "[/INST]");
        // llama.cpp finds byte tokens by the upper-case name "<0x0A>".
        assert_eq!(v.id_of("<0x0A>"), Some(FIRST_BYTE_ID + 10));
        assert_eq!(v.types()[(FIRST_BYTE_ID + 255) as usize], TokenType::Byte);
        assert_eq!(v.tokens().len(), v.scores().len());
        assert_eq!(v.tokens().len(), v.types().len());
    }

    #[test]
    fn pieces_are_unique_and_prefix_closed() {
        let v = tiny_vocab();
        let all: HashSet<&str> = v.tokens().iter().map(String::as_str).collect();
        // llama.cpp asserts that no two ids share a piece.
        assert_eq!(all.len(), v.len());
        for (piece, ty) in v.tokens().iter().zip(v.types()) {
            if *ty != TokenType::Normal {
                continue;
            }
            let chars: Vec<char> = piece.chars().collect();
            for n in 1..chars.len() {
                let prefix: String = chars[..n].iter().collect();
                assert!(
                    all.contains(prefix.as_str()),
                    "{piece:?} lacks prefix {prefix:?}"
                );
            }
        }
    }

    #[test]
    fn has_every_hangul_syllable_but_no_jamo_or_emoji() {
        let v = tiny_vocab();
        let all: HashSet<&str> = v.tokens().iter().map(String::as_str).collect();
        let syllables =
            (HANGUL_FIRST..=HANGUL_LAST).filter(|c| all.contains(c.to_string().as_str()));
        assert_eq!(syllables.count(), 11_172);
        for absent in ["ㅅ", "ㅂ", "😀"] {
            assert!(!v.tokens().iter().any(|t| t.contains(absent)), "{absent}");
        }
        assert!(all.contains("▁텀") && all.contains("▁사"));
    }

    #[test]
    fn scores_fall_with_the_id_among_normal_pieces() {
        let v = tiny_vocab();
        let first_normal = (FIRST_BYTE_ID + 256) as usize;
        assert_eq!(v.tokens()[first_normal], SPACE.to_string());
        assert!(v.scores()[first_normal..].windows(2).all(|w| w[0] > w[1]));
    }
}
