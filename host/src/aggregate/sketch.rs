//! A mergeable latency sketch: log-spaced buckets with 1% relative error
//! (the DDSketch idea), sparse, plus the exact maximum.

use std::collections::BTreeMap;

/// Bucket growth: a value v lands in bucket ceil(log_GAMMA(v)).
const GAMMA: f64 = 1.02;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    max: u64,
}

impl Sketch {
    pub fn add(&mut self, value_ns: u64) {
        let v = value_ns.max(1) as f64;
        let idx = v.ln() / GAMMA.ln();
        *self.buckets.entry(idx.ceil() as u32).or_default() += 1;
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

    /// How many values are at most `bound_ns` (within the 2% bucket width).
    pub fn count_at_most(&self, bound_ns: u64) -> u64 {
        let limit = (bound_ns.max(1) as f64).ln() / GAMMA.ln();
        self.buckets.range(..=limit.ceil() as u32).map(|(_, n)| n).sum()
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
