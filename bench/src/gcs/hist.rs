//! A log-bucketed histogram (1 % wide buckets) that load workers fill and the orchestrator
//! merges, so percentiles over every worker's samples come from a few hundred numbers per worker
//! instead of every sample.

use std::collections::BTreeMap;

/// Each bucket is this much wider than the one below it.
const GROWTH: f64 = 1.01;

/// Counts of values (≥ 1) by bucket `round(log_1.01(value))`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
}

impl Histogram {
    pub fn add(&mut self, value: f64) {
        let bucket = (value.max(1.0).ln() / GROWTH.ln()).round() as u32;
        *self.buckets.entry(bucket).or_default() += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
    }

    /// The `p`-th percentile (0–100) by nearest rank, within 1 %; 0 for no data.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().clamp(1.0, self.count as f64) as u64;
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return GROWTH.powi(*b as i32);
            }
        }
        0.0
    }

    /// `[[bucket, count], …]`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!(self.buckets.iter().map(|(b, n)| [u64::from(*b), *n]).collect::<Vec<_>>())
    }

    /// Reads what [`Histogram::to_json`] wrote; pairs that are not two numbers are skipped.
    pub fn from_json(v: &serde_json::Value) -> Histogram {
        let mut h = Histogram::default();
        for pair in v.as_array().into_iter().flatten() {
            if let (Some(b), Some(n)) = (pair.get(0).and_then(serde_json::Value::as_u64), pair.get(1).and_then(serde_json::Value::as_u64))
            {
                *h.buckets.entry(u32::try_from(b).unwrap_or(u32::MAX)).or_default() += n;
                h.count += n;
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_one_percent_and_survive_json() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.add(f64::from(v));
        }
        let h = Histogram::from_json(&h.to_json());
        assert_eq!(h.count(), 1000);
        for (p, want) in [(50.0, 500.0), (99.0, 990.0)] {
            let got = h.percentile(p);
            assert!((got - want).abs() / want < 0.011, "p{p}: {got} vs {want}");
        }
        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!(merged.count(), 2000);
        assert_eq!(Histogram::default().percentile(50.0), 0.0);
    }
}
