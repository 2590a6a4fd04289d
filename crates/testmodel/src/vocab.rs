//! The tokenizer vocabulary of the tiny test models: SentencePiece style (`tokenizer.ggml.model =
//! "llama"`), with Mistral v0.3's special-token ids and byte fallback.
//!
//! Layout by id: `<unk>` `<s>` `</s>` `[INST]` `[/INST]` (0-4, as in Mistral v0.3), the 256 byte
//! tokens `<0x00>`..`<0xFF>`, the user-defined tokens ([`USER_DEFINED_TOKENS`]), `▁`, `▁`-prefixed English words and Korean syllables, bare pieces
//! (JSON syntax, JSON keys, suffixes), the printable ASCII characters, then all 11,172 Hangul
//! syllables U+AC00..U+D7A3. Hangul Compatibility Jamo (ㅅ, ㅂ) and emoji are deliberately absent,
//! so they go through byte fallback and tests exercise UTF-8 split across tokens. The last five
//! ids are Mistral v0.3's tool-calling control tokens ([`TOOL_TOKENS`]; the real model has them
//! at ids 5-9), so that tests can call tools. The synthetic models of other families
//! ([`crate::TinyModelSpec::family`]) append their own special tokens after them
//! ([`Vocab::with_extra_tokens`]), so no id of this layout moves.
//!
//! llama.cpp's SPM tokenizer only merges two adjacent symbols when their concatenation is a
//! token, so every multi-character piece has all its prefixes in the vocabulary too (otherwise it
//! could never be formed). Scores fall with the id, as in SentencePiece, so merges into
//! `▁`-prefixed pieces win over bare ones.
//!
//! [`sized_vocab`] grows this vocabulary to a real model's size (32,768 for Mistral v0.3), for
//! synthetic models whose sampling cost must match the real one: after the tiny pieces come `▁`
//! plus every syllable (a word-initial syllable always merges with its space), common Korean
//! words and endings, then pairs of frequent syllables, most frequent first. All of it is
//! prefix-closed in any truncation, so Korean still tokenizes into syllables or longer pieces.

use std::collections::HashSet;
use std::io;

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

/// Tokens in [`tiny_vocab`]: what the default test models have.
pub const TINY_VOCAB_LEN: usize = 12_337;
/// User-defined tokens, which llama.cpp's tokenizer matches in text even with special-token
/// parsing off (as gpt-oss's `<|start|>` and `<|message|>`, and Gemma's runs of newlines): three
/// that [`MARKUP_TEMPLATE`] writes as its turn markup, and a run of newlines, which is plain text.
pub const USER_DEFINED_TOKENS: [&str; 4] = ["<|start|>", "<|message|>", "<|close|>", "\n\n"];
/// A chat template whose turn markup is user-defined tokens (gpt-oss's shape), for the tests that
/// client text never becomes markup whatever the markup's token type.
pub const MARKUP_TEMPLATE: &str = "{% for message in messages %}<|start|>{{ message['role'] }}\
<|message|>{{ message['content'] }}<|close|>{% endfor %}\
{% if add_generation_prompt %}<|start|>assistant<|message|>{% endif %}";
/// Mistral v0.3's tool-calling control tokens, the last ids of every vocabulary built here.
pub const TOOL_TOKENS: [&str; 5] = [
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
];
/// Tokens in Mistral-7B-Instruct-v0.3's vocabulary, the size [`sized_vocab`] exists for.
pub const MISTRAL_VOCAB_LEN: usize = 32_768;

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
    /// A piece the tokenizer matches before anything else, even without special parsing.
    UserDefined = 4,
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

/// Korean words of the Leafresh domain and everyday text, extension pieces as `▁word`.
const KOREAN_WORDS: &str = "
    챌린지 추천 텀블러 사용 사용하기 환경 지구 탄소 발자국 탄소발자국 에너지 절약 재활용 일회용
    플라스틱 쓰레기 줄이기 분리수거 장바구니 대중교통 자전거 걷기 채식 비건 음식 음식물 전기
    전기차 나무 심기 제로 웨이스트 제로웨이스트 플로깅 업사이클 업사이클링 문화 공유 디지털 이메일
    정리 삭제 사무직 학생 주부 도시 농촌 바닷가 산 회사 집 학교 매일 오늘 하루 일주일 한달 실천
    방법 작은 습관 만들기 함께 친환경 제품 포장 용기 컵 빨대 종이 비닐 봉투 가방 옷 중고 나눔
    기부 캠페인 참여 목표 절감 꺼두기 콘센트 플러그 조명 냉난방 온도 계단 이용 대신 직접 가까운
    지역 로컬 푸드 제철 식물 화분 텃밭 퇴비 남기지 않기 설명 제목 카테고리 그리고 하지만 그래서
    우리 당신 여러분 사람 생활 일상 건강 행복 시작 도전 성공 기록 인증 사진 친구 가족 동료 이웃
    안녕하세요 감사합니다 있습니다 없습니다 합니다 입니다 됩니다 있는 없는 하는 위한 위해 통해
    대한 같은 다른 많은 모든 새로운 좋은 쉬운 간단한 효과 줄일 수 있어요 해보세요 보세요
";

/// Endings and particles, extension pieces without `▁` (they follow a stem).
const KOREAN_ENDINGS: &str = "
    하기 하다 하는 하고 해요 해서 합니다 입니다 습니다 니다 에서 으로 에게 까지 부터 처럼 보다
    이나 이다 이고 세요 하세요 해보세요 적인 지요 네요 어요 아요 었다 았다 겠다 는데 지만 면서
    도록 기로 하면 해야 했다 한다 된다 되는 되어 으면 으니 이에요 예요
";

/// Frequent syllables, most frequent first (roughly, from Korean text counts); pairs of them
/// fill the vocabulary up to the size asked for. Repeats are skipped.
const FREQUENT_SYLLABLES: &str = "
    이다의는에하고을가로지기대사리서한도자어일으정나시인수상있들부니제적주아전해보할그것라와
    국였과면동원게만무성문장경재용생발소화운연구공여위물년중개조실계관신학마내세방행미분데식요
    결체비모치통터야된했람후까우감거환활천탄절약플쓰줄업챌린텀블러건강녹색친레기음품
";
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

    /// The vocabulary with a model family's special tokens: each text that is not a token yet is
    /// appended at the end (score 0, as the other special tokens), so that every id of the base
    /// vocabulary stays where it is; a text that is a token already keeps its id and takes the
    /// type given. That is how gpt-oss gets `<|start|>` and `<|message|>`: every vocabulary here
    /// has them as user-defined tokens ([`USER_DEFINED_TOKENS`]), the real file as control ones.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty text or one given twice (llama.cpp refuses a vocabulary in
    /// which two ids share a piece).
    pub fn with_extra_tokens(mut self, extra: &[(String, TokenType)]) -> io::Result<Self> {
        let mut seen = HashSet::new();
        for (text, ty) in extra {
            if text.is_empty() || !seen.insert(text.as_str()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("extra token {text:?} is empty or given twice"),
                ));
            }
            match self.id_of(text) {
                Some(id) => self.types[id as usize] = *ty,
                None => {
                    self.push(text.clone(), *ty);
                    self.scores.push(0.0);
                }
            }
        }
        Ok(self)
    }

    fn push(&mut self, piece: String, ty: TokenType) {
        self.tokens.push(piece);
        self.types.push(ty);
    }
}

/// Builds the vocabulary described in the module documentation ([`TINY_VOCAB_LEN`] tokens).
/// Deterministic.
pub fn tiny_vocab() -> Vocab {
    let mut normal = NormalPieces::default();
    add_tiny_pieces(&mut normal);
    build(normal.pieces)
}

/// The tiny vocabulary grown to exactly `n_vocab` tokens with the extension pieces the module
/// documentation describes; the first [`TINY_VOCAB_LEN`] ids are [`tiny_vocab`]'s.
/// Deterministic.
///
/// # Errors
///
/// `InvalidInput` if `n_vocab` is below [`TINY_VOCAB_LEN`] or above [`max_vocab_len`].
pub fn sized_vocab(n_vocab: usize) -> io::Result<Vocab> {
    let max = max_vocab_len();
    if !(TINY_VOCAB_LEN..=max).contains(&n_vocab) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("n_vocab ({n_vocab}) must be between {TINY_VOCAB_LEN} and {max}"),
        ));
    }
    let mut pieces = extended_pieces();
    // Pieces are added after their prefixes, so any truncation stays prefix-closed.
    pieces.truncate(n_vocab - N_SPECIAL - TOOL_TOKENS.len());
    Ok(build(pieces))
}

/// The largest vocabulary [`sized_vocab`] can build (40,104 tokens: room above
/// [`MISTRAL_VOCAB_LEN`]).
pub fn max_vocab_len() -> usize {
    N_SPECIAL + extended_pieces().len() + TOOL_TOKENS.len()
}

/// `<unk>`, four control tokens, 256 byte tokens and the user-defined ones precede the normal
/// pieces.
const N_SPECIAL: usize = 5 + 256 + USER_DEFINED_TOKENS.len();

/// Every normal piece [`sized_vocab`] may use, in id order.
fn extended_pieces() -> Vec<String> {
    let mut normal = NormalPieces::default();
    add_tiny_pieces(&mut normal);
    for syllable in HANGUL_FIRST..=HANGUL_LAST {
        normal.add(&format!("{SPACE}{syllable}"));
    }
    for word in KOREAN_WORDS.split_whitespace() {
        normal.add(&format!("{SPACE}{word}"));
    }
    for ending in KOREAN_ENDINGS.split_whitespace() {
        normal.add(ending);
    }
    let mut seen = HashSet::new();
    let frequent: Vec<char> = FREQUENT_SYLLABLES
        .chars()
        .filter(|c| !c.is_whitespace() && seen.insert(*c))
        .collect();
    // By rank sum, so a truncated vocabulary keeps the pairs of the most frequent syllables.
    let n = frequent.len();
    for rank_sum in 0..2 * n - 1 {
        for first in rank_sum.saturating_sub(n - 1)..=rank_sum.min(n - 1) {
            let pair: String = [frequent[first], frequent[rank_sum - first]]
                .iter()
                .collect();
            normal.add(&pair);
        }
    }
    normal.pieces
}

/// The normal pieces of [`tiny_vocab`], in falling score order.
fn add_tiny_pieces(normal: &mut NormalPieces) {
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
}

/// Special and byte tokens, then `normal` with scores falling from 0 by one per piece.
fn build(normal: Vec<String>) -> Vocab {
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
    for piece in USER_DEFINED_TOKENS {
        vocab.push(piece.into(), TokenType::UserDefined);
    }
    debug_assert_eq!(vocab.len(), N_SPECIAL);
    vocab.scores = vec![0.0; N_SPECIAL];
    for (rank, piece) in normal.into_iter().enumerate() {
        vocab.push(piece, TokenType::Normal);
        vocab.scores.push(-(rank as f32));
    }
    for tool in TOOL_TOKENS {
        vocab.push(tool.into(), TokenType::Control);
        vocab.scores.push(0.0);
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
        for v in [tiny_vocab(), sized_vocab(MISTRAL_VOCAB_LEN).unwrap()] {
            assert_unique_and_prefix_closed(&v);
        }
    }

    fn assert_unique_and_prefix_closed(v: &Vocab) {
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
    fn tiny_vocab_keeps_its_size() {
        assert_eq!(tiny_vocab().len(), TINY_VOCAB_LEN);
    }

    #[test]
    fn sized_vocab_extends_the_tiny_one_to_mistrals_size() {
        let tiny = tiny_vocab();
        let v = sized_vocab(MISTRAL_VOCAB_LEN).unwrap();
        assert_eq!(v.len(), MISTRAL_VOCAB_LEN);
        let pieces = TINY_VOCAB_LEN - TOOL_TOKENS.len();
        let tail = MISTRAL_VOCAB_LEN - TOOL_TOKENS.len();
        assert_eq!(v.tokens()[..pieces], tiny.tokens()[..pieces]);
        assert_eq!(v.scores()[..pieces], tiny.scores()[..pieces]);
        assert!(v.scores()[pieces - 1..tail].windows(2).all(|w| w[0] > w[1]));
        assert!(v.types()[pieces..tail]
            .iter()
            .all(|t| *t == TokenType::Normal));
        assert_eq!(v.tokens()[tail..], tiny.tokens()[pieces..]);
        assert_eq!(v.tokens()[tail], "[TOOL_CALLS]");
        for piece in ["▁텀블러", "▁가", "▁힣", "하기", "이다"] {
            assert!(v.id_of(piece).is_some(), "{piece}");
        }
        assert_eq!(sized_vocab(TINY_VOCAB_LEN).unwrap().tokens(), tiny.tokens());
    }

    #[test]
    fn sized_vocab_refuses_sizes_it_cannot_build() {
        let max = max_vocab_len();
        assert!(max > MISTRAL_VOCAB_LEN, "{max}");
        assert_eq!(sized_vocab(max).unwrap().len(), max);
        for n in [TINY_VOCAB_LEN - 1, max + 1] {
            let err = sized_vocab(n).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn extra_tokens_go_at_the_end_or_retype_a_token_in_place() {
        let tiny = tiny_vocab();
        let extra = [
            ("<|im_start|>".to_string(), TokenType::Control),
            ("<tool_call>".to_string(), TokenType::UserDefined),
            ("<|start|>".to_string(), TokenType::Control),
        ];
        let v = tiny.clone().with_extra_tokens(&extra).unwrap();
        assert_eq!(v.len(), TINY_VOCAB_LEN + 2);
        assert_eq!(v.tokens()[..TINY_VOCAB_LEN], tiny.tokens()[..]);
        assert_eq!(v.id_of("<|im_start|>"), Some(TINY_VOCAB_LEN as u32));
        assert_eq!(v.types()[TINY_VOCAB_LEN + 1], TokenType::UserDefined);
        assert_eq!(v.scores().len(), v.len());
        let start = v.id_of("<|start|>").unwrap() as usize;
        assert_eq!(tiny.types()[start], TokenType::UserDefined);
        assert_eq!(v.types()[start], TokenType::Control);
        assert_unique_and_prefix_closed(&v);

        let twice = [extra[0].clone(), extra[0].clone()];
        let err = tiny_vocab().with_extra_tokens(&twice).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn scores_fall_with_the_id_among_normal_pieces() {
        let v = tiny_vocab();
        let first_normal = (FIRST_BYTE_ID + 256) as usize + USER_DEFINED_TOKENS.len();
        assert_eq!(v.tokens()[first_normal], SPACE.to_string());
        let tools = v.len() - TOOL_TOKENS.len();
        assert!(v.scores()[first_normal..tools]
            .windows(2)
            .all(|w| w[0] > w[1]));
        assert!(v.types()[tools..].iter().all(|t| *t == TokenType::Control));
    }
}
