//! A mergeable latency sketch: log-spaced buckets with about 1.1% relative
//! error (the DDSketch idea), sparse, plus the exact maximum.
//!
//! The bucket factor is 2^(1/32), OpenTelemetry's exponential histogram at
//! scale 5: sketch bucket k is that histogram's bucket k - 1, so the OTLP
//! flusher hands the buckets over exactly, with no re-binning.

use std::collections::BTreeMap;

/// The OpenTelemetry exponential histogram scale the buckets match.
pub const SCALE: i32 = 5;
/// Bucket growth, 2^(2^-SCALE): a value v lands in bucket ceil(log_GAMMA(v)),
/// which holds (GAMMA^(k-1), GAMMA^k].
const GAMMA: f64 = 1.021_897_148_654_116_7;

/// ceil(log_GAMMA(v)) = ceil(log2(v) * 2^SCALE), without a logarithm: the
/// octave is v's highest set bit, the step within it the first j with
/// v <= 2^octave * 2^(j/32). (Exact for values below 2^53 ns, since v
/// over its octave is then exact; a libm `log2` cost about 11 ns a call.)
fn bucket_of(value_ns: u64) -> u32 {
    /// 2^(j/32) for j in 0..=32.
    static STEPS: std::sync::LazyLock<[f64; 33]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|j| if j == 32 { 2.0 } else { (j as f64 / 32.0).exp2() }));
    let v = value_ns.max(1);
    let octave = 63 - v.leading_zeros();
    // v / 2^octave, in [1, 2).
    let f = v as f64 * f64::from_bits((1023 - u64::from(octave)) << 52);
    // 2^x <= 1 + x on [0, 1], so 32 (f - 1) never passes the step: at
    // most three more to go.
    let steps = &*STEPS;
    let mut j = ((f - 1.0) * 32.0) as usize;
    while f > steps[j] {
        j += 1;
    }
    octave * 32 + j as u32
}

/// Buckets counted in an array around a key's first value: 128 buckets,
/// four octaves each side, hold nearly every value of a key without a
/// search (a map lookup per call cost about 25 ns); the rest go to a map.
const NEAR: u32 = 128;

#[derive(Clone, Debug, Default)]
pub struct Sketch {
    /// Counts of buckets `near_from..near_from + NEAR` (empty until the
    /// first value).
    near: Vec<u64>,
    near_from: u32,
    /// Counts of the buckets outside the array.
    far: BTreeMap<u32, u64>,
    count: u64,
    max: u64,
}

impl PartialEq for Sketch {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.max == other.max && self.buckets().eq(other.buckets())
    }
}

impl Sketch {
    pub fn add(&mut self, value_ns: u64) {
        self.add_to(bucket_of(value_ns), 1);
        self.count += 1;
        self.max = self.max.max(value_ns);
    }

    fn add_to(&mut self, bucket: u32, n: u64) {
        if self.near.is_empty() {
            self.near = vec![0; NEAR as usize];
            self.near_from = bucket.saturating_sub(NEAR / 2);
        }
        match self.near.get_mut(bucket.wrapping_sub(self.near_from) as usize) {
            Some(c) => *c += n,
            None => *self.far.entry(bucket).or_default() += n,
        }
    }

    /// Non-empty buckets, ascending, with their counts.
    fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        // (The map holds no bucket of the array's span.)
        let below = self.far.range(..self.near_from).map(|(k, n)| (*k, *n));
        let near = (self.near_from..).zip(self.near.iter().copied()).filter(|(_, n)| *n > 0);
        let above = self.far.range(self.near_from + NEAR..).map(|(k, n)| (*k, *n));
        below.chain(near).chain(above)
    }

    /// Add everything of another sketch.
    pub fn merge(&mut self, other: &Sketch) {
        for (k, n) in other.buckets() {
            self.add_to(k, n);
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The non-empty buckets as OpenTelemetry exponential histogram indexes
    /// at [`SCALE`] (index i holds (GAMMA^i, GAMMA^(i+1)]), ascending, with
    /// their counts. Values of 0 are counted as 1 ns (index -1).
    pub fn exponential_buckets(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.buckets().map(|(k, n)| (i64::from(k) - 1, n))
    }

    /// How many values are at most `bound_ns` (within the 2.2% bucket width).
    pub fn count_at_most(&self, bound_ns: u64) -> u64 {
        let bound = bucket_of(bound_ns);
        self.buckets().take_while(|(k, _)| *k <= bound).map(|(_, n)| n).sum()
    }

    /// The value at quantile `q` (0..=1), within 1%; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (k, n) in self.buckets() {
            seen += n;
            if seen >= rank {
                // The bucket's midpoint (in log space), never above the max.
                let upper = GAMMA.powi(k as i32);
                let estimate = upper * 2.0 / (1.0 + GAMMA);
                return (estimate.round() as u64).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_opentelemetry_scale_5_buckets() {
        assert!((GAMMA - 2f64.powf(2f64.powi(-SCALE))).abs() < 1e-15);
        let mut s = Sketch::default();
        // Exact powers of the base sit at the top of their bucket; one more
        // nanosecond above 1024 ns = 2^10 starts the next bucket.
        for v in [1, 1024, 1025, 1_000_000] {
            s.add(v);
        }
        let got: Vec<(i64, u64)> = s.exponential_buckets().collect();
        // OTel: index i holds (2^(i/32), 2^((i+1)/32)]: 1 is in -1, 1024 in
        // 319, 1025 in 320, 1e6 in floor(32*log2(1e6) - tiny) = 637.
        assert_eq!(got, vec![(-1, 1), (319, 1), (320, 1), (637, 1)]);
    }

    /// The bucket without a logarithm is the bucket of one.
    #[test]
    fn buckets_without_a_logarithm() {
        let by_log = |v: u64| ((v.max(1) as f64).log2() * 32.0).ceil() as u32;
        let mut x = 1u64;
        let mut spread = (0..200_000).map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> (x % 60)
        });
        for v in (0..100_000).chain(spread.by_ref()).chain([u64::from(u32::MAX), 1 << 40, (1 << 40) + 1]) {
            assert_eq!(bucket_of(v), by_log(v), "{v}");
        }
    }

    /// Values far from a key's first one (in the map, not the array) are
    /// counted and ordered alike, and sketches merge whatever their spans.
    #[test]
    fn far_values_and_merges_across_spans() {
        let values = [1_000_000u64, 1, 999, 1_000, 50_000_000_000, 1_000_001, 20_000_000];
        let mut a = Sketch::default();
        values.iter().for_each(|&v| a.add(v));
        let want: Vec<u32> = {
            let mut b: Vec<u32> = values.iter().map(|&v| bucket_of(v)).collect();
            b.sort_unstable();
            b.dedup();
            b
        };
        assert_eq!(a.buckets().map(|(k, _)| k).collect::<Vec<_>>(), want);
        assert!(!a.far.is_empty());
        // The same values, first seen elsewhere: the same sketch.
        let mut b = Sketch::default();
        values.iter().rev().for_each(|&v| b.add(v));
        assert_eq!(a, b);
        let mut merged = Sketch::default();
        merged.add(3);
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.count(), 15);
        assert_eq!(merged.count_at_most(1_000), 7, "1, 999 and 1000 twice each, and 3");
        assert_eq!(merged.quantile(1.0), 50_000_000_000);
    }

    #[test]
    fn quantiles_within_one_percent_and_merge() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for v in 1..=10_000u64 {
            if v % 2 == 0 {
                a.add(v * 1000)
            } else {
                b.add(v * 1000)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), 10_000);
        assert_eq!(a.max(), 10_000_000);
        for (q, exact) in [(0.5, 5_000_000f64), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = a.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.011, "q{q}: {got} vs {exact}");
        }
        assert_eq!(Sketch::default().quantile(0.5), 0);
    }
}
