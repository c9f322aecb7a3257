//! Percentiles and medians over measured durations (microseconds as f64: these are timings,
//! never money).

use std::time::Duration;

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `q`-quantile (0..=1) of `v`, nearest-rank; `v` need not be sorted.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// p50, p99, p99.9.
pub fn p3(v: &mut [f64]) -> [f64; 3] {
    [quantile(v, 0.50), quantile(v, 0.99), quantile(v, 0.999)]
}

/// The median of repeated figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    quantile(&mut v, 0.5)
}

/// Element-wise medians of repeated `[f64; N]` figures.
pub fn median_each<const N: usize>(runs: &[[f64; N]]) -> [f64; N] {
    std::array::from_fn(|i| median(runs.iter().map(|r| r[i]).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 500.0);
        assert_eq!(quantile(&mut v, 0.99), 990.0);
        assert_eq!(quantile(&mut v, 0.999), 999.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0, 5.0, 4.0]), 3.0);
    }
}
