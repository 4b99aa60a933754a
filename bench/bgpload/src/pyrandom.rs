//! CPython's `random.Random`, draw for draw.
//!
//! The shared harness's tables come from Python's Mersenne Twister
//! (`bgpwire.build_table_stream`); results are only comparable across load
//! generators if the same seed gives the same prefixes, attribute groups and
//! AS paths. So this reproduces CPython 3's seeding (`init_by_array` over the
//! seed's 32-bit words) and the exact way `random()`, `getrandbits()`,
//! `randint()`, `choice()` and `choices()` consume the generator.

const N: usize = 624;
const M: usize = 397;

/// A Mersenne Twister seeded and drawn from as CPython's `random.Random`.
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        // CPython splits abs(seed) into little-endian 32-bit words, at least one.
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    fn twist(&mut self) {
        for k in 0..N {
            let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// One tempered 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random()`: 53 random bits in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for 0 ≤ k ≤ 32.
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        match k {
            0 => 0,
            1..=32 => self.next_u32() >> (32 - k),
            _ => panic!("getrandbits({k}): only up to 32 bits are drawn here"),
        }
    }

    /// `_randbelow(n)` for 1 ≤ n < 2^32: rejection sampling on `bit_length(n)` bits.
    fn below(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `randint(a, b)`, both ends included.
    pub fn randint(&mut self, a: u32, b: u32) -> u32 {
        a + self.below(b - a + 1)
    }

    /// `choice(seq)`: the index drawn.
    pub fn choice_index(&mut self, len: usize) -> usize {
        self.below(len as u32) as usize
    }

    /// `choices(population, weights)` for one draw: the index drawn, with the
    /// cumulative weights and the bisection CPython uses.
    pub fn choices_index(&mut self, cum_weights: &[u32]) -> usize {
        let total = f64::from(cum_weights[cum_weights.len() - 1]);
        let x = self.random() * total;
        let hi = cum_weights.len() - 1;
        // bisect_right(cum_weights, x, 0, hi)
        cum_weights[..hi].partition_point(|&w| f64::from(w) <= x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_draws_of_seed_1_match_cpython() {
        // python3 -c 'import random; r=random.Random(1); print([r.getrandbits(32) for _ in range(3)], r.random())'
        let mut r = PyRandom::new(1);
        let words: Vec<u32> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(words, [577_090_037, 2_444_712_010, 3_639_700_191]);
        assert_eq!(r.random(), 0.802_265_061_168_183_5);
    }
}
