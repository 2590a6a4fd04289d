//! GGML's Q4_0 block format: 32 weights in 18 bytes, a half-float scale `d` then 16 bytes of
//! packed 4-bit quants, each weight being `(q - 8) * d`. Byte `j` holds weight `j` in its low
//! nibble and weight `j + 16` in its high nibble (`block_q4_0` in ggml-common.h).
//!
//! Q4_0 is the simplest 4-bit format llama.cpp reads, and decoding speed depends on the bytes per
//! weight, not on their values, so a synthetic Q4_0 model reads memory like a real 4-bit one.

use super::gguf::f32_to_f16_bits;
use super::rng::SplitMix64;

/// Weights per Q4_0 block (`QK4_0`).
pub const Q4_0_BLOCK_LEN: usize = 32;
/// Bytes per Q4_0 block: a 2-byte f16 scale and 16 bytes of nibbles.
pub const Q4_0_BLOCK_BYTES: usize = 2 + Q4_0_BLOCK_LEN / 2;

/// Appends the Q4_0 encoding of `values` to `out`, exactly as ggml's `quantize_row_q4_0_ref`
/// does, so a file written from f32 values matches what `llama-quantize` would produce.
///
/// # Panics
///
/// If `values.len()` is not a multiple of [`Q4_0_BLOCK_LEN`]; callers check first.
pub fn quantize_q4_0(values: &[f32], out: &mut Vec<u8>) {
    assert!(values.len().is_multiple_of(Q4_0_BLOCK_LEN));
    for block in values.chunks_exact(Q4_0_BLOCK_LEN) {
        // The value of largest magnitude, with its sign, maps to quant 0 (-8 * d).
        let max = block
            .iter()
            .fold(0.0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
        let d = max / -8.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
        let (low, high) = block.split_at(Q4_0_BLOCK_LEN / 2);
        for (lo, hi) in low.iter().zip(high) {
            // `as u8` truncates toward zero like C's (int8_t) cast for these non-negative inputs
            // and saturates a NaN to 0, where C would be undefined.
            let quant = |v: f32| ((v * inverse + 8.5) as u8).min(15);
            out.push(quant(*lo) | (quant(*hi) << 4));
        }
    }
}

/// Appends one random Q4_0 block whose weights stay within `±amplitude`: quants uniform over
/// -7..=7 (zero twice as likely), so weights average zero and a 32-layer residual stream does not
/// drift, and a scale uniform in `[amplitude / 14, amplitude / 7)` so blocks differ in size like
/// real ones. Three random words per block: this fills 7B weights in seconds.
pub fn random_q4_0_block(rng: &mut SplitMix64, amplitude: f32, out: &mut Vec<u8>) {
    let unit = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    let d = amplitude / 7.0 * (0.5 + 0.5 * unit);
    out.extend_from_slice(&f32_to_f16_bits(d).to_le_bytes());
    for _ in 0..2 {
        for byte in rng.next_u64().to_le_bytes() {
            // Raw nibbles 0..=15 mean -8..=7, biased by -0.5 d; moving 0 to 8 (weight 0)
            // makes the distribution symmetric.
            let lo = match byte & 0x0f {
                0 => 8,
                q => q,
            };
            let hi = match byte >> 4 {
                0 => 8,
                q => q,
            };
            out.push(lo | (hi << 4));
        }
    }
}

/// The 32 weights of one Q4_0 block (for checks; llama.cpp does this when it computes).
///
/// # Panics
///
/// If `block` is not [`Q4_0_BLOCK_BYTES`] long.
pub fn dequantize_q4_0(block: &[u8]) -> [f32; Q4_0_BLOCK_LEN] {
    assert_eq!(block.len(), Q4_0_BLOCK_BYTES);
    let d = f16_bits_to_f32(u16::from_le_bytes([block[0], block[1]]));
    let mut weights = [0.0; Q4_0_BLOCK_LEN];
    for (j, byte) in block[2..].iter().enumerate() {
        weights[j] = (f32::from(byte & 0x0f) - 8.0) * d;
        weights[j + Q4_0_BLOCK_LEN / 2] = (f32::from(byte >> 4) - 8.0) * d;
    }
    weights
}

/// The f32 value of IEEE binary16 `bits` (exact: every half is representable as a float).
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x03ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        0x1f if mantissa == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizing_round_trips_within_a_step_and_keeps_the_extreme() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 10.0 - 1.1)
            .collect();
        let mut bytes = Vec::new();
        quantize_q4_0(&values, &mut bytes);
        assert_eq!(bytes.len(), 2 * Q4_0_BLOCK_BYTES);
        for (block, original) in bytes
            .chunks_exact(Q4_0_BLOCK_BYTES)
            .zip(values.chunks_exact(Q4_0_BLOCK_LEN))
        {
            let step = f16_bits_to_f32(u16::from_le_bytes([block[0], block[1]])).abs();
            let weights = dequantize_q4_0(block);
            // Inside -8d..7d a weight is the nearest step; the opposite extreme of the largest
            // value clamps at 7 steps, up to one step off (as in ggml), plus 7 times the f16
            // rounding of the step.
            for (w, v) in weights.iter().zip(original) {
                assert!((w - v).abs() <= step * 1.01, "{w} vs {v} (step {step})");
            }
            let extreme = original.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let largest = weights.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!((largest - extreme).abs() < 1e-3, "{largest} vs {extreme}");
        }
    }

    #[test]
    fn quantizing_matches_ggml_on_a_known_block() {
        // Largest magnitude -1.6 gives d = 0.2; weight j is (j - 8) * 0.2, exactly quant j.
        let mut values = [0.0f32; Q4_0_BLOCK_LEN];
        for (j, v) in values.iter_mut().enumerate() {
            *v = ((j % 16) as f32 - 8.0) * 0.2;
        }
        let mut bytes = Vec::new();
        quantize_q4_0(&values, &mut bytes);
        assert_eq!(bytes[..2], f32_to_f16_bits(0.2).to_le_bytes());
        let expected: Vec<u8> = (0..16u8).map(|q| q | (q << 4)).collect();
        assert_eq!(bytes[2..], expected[..]);

        let mut zeros = Vec::new();
        quantize_q4_0(&[0.0; Q4_0_BLOCK_LEN], &mut zeros);
        assert_eq!(dequantize_q4_0(&zeros), [0.0; Q4_0_BLOCK_LEN]);
    }

    #[test]
    fn random_blocks_are_bounded_centred_and_varied() {
        let mut rng = SplitMix64::new(9);
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            random_q4_0_block(&mut rng, 0.05, &mut bytes);
        }
        assert_eq!(bytes.len(), 1000 * Q4_0_BLOCK_BYTES);
        let weights: Vec<f32> = bytes
            .chunks_exact(Q4_0_BLOCK_BYTES)
            .flat_map(dequantize_q4_0)
            .collect();
        // 1.001: the f16 scale may round up by half a unit in the last place.
        assert!(weights.iter().all(|w| w.abs() <= 0.05 * 1.001));
        let mean = weights.iter().sum::<f32>() / weights.len() as f32;
        assert!(mean.abs() < 0.001, "mean {mean}");
        let distinct_scales: std::collections::HashSet<[u8; 2]> = bytes
            .chunks_exact(Q4_0_BLOCK_BYTES)
            .map(|b| [b[0], b[1]])
            .collect();
        assert!(distinct_scales.len() > 100);
    }

    #[test]
    fn f16_decoding_inverts_encoding() {
        for value in [0.0, -0.0, 1.0, -2.5, 0.1, 65504.0, 2f32.powi(-24), 1e-3] {
            let bits = f32_to_f16_bits(value);
            assert_eq!(f32_to_f16_bits(f16_bits_to_f32(bits)), bits, "{value}");
        }
        assert_eq!(f16_bits_to_f32(0x3c00), 1.0);
        assert_eq!(f16_bits_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_bits_to_f32(0x7e00).is_nan());
    }
}
