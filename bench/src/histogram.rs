//! A fixed-size log-linear histogram of nanosecond latencies.
//!
//! Values below 64 ns get one bucket each; above that every power of two is split into 32
//! sub-buckets, so a reported percentile is within about 3 % of the true value over the whole
//! `u64` range. The bucket array is allocated once; recording is a shift and an increment.

const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
const FIRST_LOG_EXPONENT: u32 = 6;
const BUCKETS: usize = (LINEAR + (64 - FIRST_LOG_EXPONENT as u64) * SUB_BUCKETS) as usize;

/// Counts of nanosecond values in log-linear buckets.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    (LINEAR + u64::from(exponent - FIRST_LOG_EXPONENT) * SUB_BUCKETS + sub) as usize
}

/// The largest value that lands in `bucket`.
fn bucket_ceiling(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return bucket;
    }
    let exponent = (bucket - LINEAR) / SUB_BUCKETS + u64::from(FIRST_LOG_EXPONENT);
    let sub = (bucket - LINEAR) % SUB_BUCKETS;
    let width = 1u64 << (exponent - u64::from(SUB_BITS));
    ((1u64 << exponent) + sub * width).saturating_add(width - 1)
}

impl LatencyHistogram {
    /// Records one value.
    pub fn record(&mut self, value_ns: u64) {
        self.counts[bucket_of(value_ns)] += 1;
        self.total += 1;
        self.max = self.max.max(value_ns);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest recorded value, exactly.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// An upper bound (within one bucket) of the value below which `quantile` (0..=1) of the
    /// recorded values lie; `None` when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_ceiling(bucket).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_and_ceilings_bound_their_values() {
        for value in [0, 1, 63, 64, 65, 100, 1_000, 123_456, 10_000_000_000, u64::MAX] {
            let bucket = bucket_of(value);
            assert!(bucket < BUCKETS);
            assert!(bucket_ceiling(bucket) >= value, "value {value}");
            if bucket > 0 {
                assert!(bucket_ceiling(bucket - 1) < value, "value {value}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_a_few_percent() {
        let mut h = LatencyHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.04, "p50 {p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.04, "p99 {p99}");
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }
}
