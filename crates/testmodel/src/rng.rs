//! A tiny deterministic PRNG (SplitMix64) for test weights: no `rand` dependency, and the same
//! seed gives the same file on every machine.

/// SplitMix64: one 64-bit state, passes BigCrush, and is more than enough for random weights.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one named stream (one tensor) under a file-wide seed. Keying the stream by
    /// name keeps every tensor's values stable when other tensors change shape or order.
    pub fn for_stream(seed: u64, name: &str) -> Self {
        // FNV-1a over the name, then mixed with the seed by one SplitMix step.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut mixer = Self::new(seed ^ hash);
        Self::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-amplitude, amplitude)`.
    pub fn uniform(&mut self, amplitude: f32) -> f32 {
        // The top 24 bits give every representable step of an f32 in [0, 1).
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * amplitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ_by_name() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::for_stream(7, "blk.0.attn_q.weight");
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::for_stream(7, "blk.0.attn_q.weight");
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = SplitMix64::for_stream(7, "blk.0.attn_k.weight");
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_stays_in_range_and_is_centred() {
        let mut r = SplitMix64::new(42);
        let values: Vec<f32> = (0..10_000).map(|_| r.uniform(0.05)).collect();
        assert!(values.iter().all(|v| (-0.05..0.05).contains(v)));
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!(mean.abs() < 0.005, "mean {mean}");
    }
}
