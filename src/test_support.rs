//! Helpers for the unit tests in this crate (compiled only under `cfg(test)`). The fuzz checks
//! themselves are in `crates/fuzz-checks`, which depends on this crate and so cannot serve its
//! unit tests.

/// A saved fuzz finding, `fuzz/regressions/TARGET/NAME`, for the regression test named after it.
pub(crate) fn regression_input(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether llguidance, fed `text` byte by byte, accepts it as a whole output of the Lark
/// `grammar` (the grammars this service writes, checked without a model).
pub(crate) fn lark_accepts(grammar: &str, text: &str) -> bool {
    use llguidance::api::TopLevelGrammar;
    use llguidance::toktrie::ApproximateTokEnv;
    use llguidance::{Matcher, ParserFactory};
    let env = ApproximateTokEnv::single_byte_env();
    let mut factory = ParserFactory::new_simple(&env).expect("a parser factory");
    factory.set_stderr_log_level(0);
    let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar.to_owned()));
    let mut matcher = Matcher::new(parser);
    assert!(!matcher.is_error(), "{:?}", matcher.get_error());
    // The single-byte vocabulary: token i is byte i.
    let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
    matches!(matcher.try_consume_tokens(&bytes), Ok(n) if n == bytes.len())
        && matcher.is_accepting().unwrap_or(false)
}
