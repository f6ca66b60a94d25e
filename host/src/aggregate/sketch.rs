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

/// ceil(log_GAMMA(v)) as ceil(log2(v) * 2^SCALE): log2 is exact at powers
/// of two, so they land at the top of their bucket as OpenTelemetry has it.
fn bucket_of(value_ns: u64) -> u32 {
    ((value_ns.max(1) as f64).log2() * f64::from(1u32 << SCALE)).ceil() as u32
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    max: u64,
}

impl Sketch {
    pub fn add(&mut self, value_ns: u64) {
        *self.buckets.entry(bucket_of(value_ns)).or_default() += 1;
        self.count += 1;
        self.max = self.max.max(value_ns);
    }

    /// Add everything of another sketch.
    pub fn merge(&mut self, other: &Sketch) {
        for (k, n) in &other.buckets {
            *self.buckets.entry(*k).or_default() += n;
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
        self.buckets.iter().map(|(k, n)| (i64::from(*k) - 1, *n))
    }

    /// How many values are at most `bound_ns` (within the 2.2% bucket width).
    pub fn count_at_most(&self, bound_ns: u64) -> u64 {
        self.buckets.range(..=bucket_of(bound_ns)).map(|(_, n)| n).sum()
    }

    /// The value at quantile `q` (0..=1), within 1%; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (k, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                // The bucket's midpoint (in log space), never above the max.
                let upper = GAMMA.powi(*k as i32);
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
