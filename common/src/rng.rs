//! A small, fast, seedable random number generator (xorshift64*) for tie-breaking, test run
//! names and randomized tests.
//!
//! Nothing here needs cryptographic randomness, and a seed that reproduces a randomized test's
//! run matters more than quality, so one tiny generator serves all of them instead of a
//! dependency or a copy per crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*: the same seed gives the same sequence.
#[derive(Clone, Debug)]
pub struct SmallRng(u64);

impl SmallRng {
    /// A generator seeded with `seed` (0 is as good as any other seed).
    pub fn seeded(seed: u64) -> Self {
        // xorshift never leaves 0; scramble the seed so small seeds start well apart.
        SmallRng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A generator seeded from the clock, the process id and `salt`.
    pub fn from_clock(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::seeded(nanos ^ u64::from(std::process::id()).rotate_left(32) ^ salt.rotate_left(48))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index into a slice of `len` items (`len` > 0).
    pub fn index(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// True once in `n` times, on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_sequence_and_values_stay_in_range() {
        let (mut a, mut b) = (SmallRng::seeded(7), SmallRng::seeded(7));
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(
            first,
            (0..8)
                .map(|_| SmallRng::seeded(8).next_u64())
                .collect::<Vec<_>>()
        );
        let mut rng = SmallRng::seeded(0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[rng.index(10)] = true;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|s| *s), "every value below 10 comes up");
    }
}
