//! Pure helpers: percentiles and formatting (unit-tested; the rest of the bench needs root).

/// The `p`-th percentile (0–100) of `samples` by nearest rank; `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Median (50th percentile, nearest rank).
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// Milliseconds with sensible precision: `0.084`, `1.92`, `25.3`, `1840`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// `median / p99` of samples in ms, or `–`.
pub fn fmt_med_p99(samples: &[f64]) -> String {
    match (median(samples), percentile(samples, 99.0)) {
        (Some(m), Some(p)) if samples.len() > 1 => format!("{} / {}", fmt_ms(m), fmt_ms(p)),
        (Some(m), _) => fmt_ms(m),
        _ => "–".to_string(),
    }
}

/// `a / b` as `12.3×`, or `–`.
pub fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "–".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(0.0844), "0.084");
        assert_eq!(fmt_ms(1.923), "1.92");
        assert_eq!(fmt_ms(25.34), "25.3");
        assert_eq!(fmt_ms(1840.4), "1840");
        assert_eq!(fmt_med_p99(&[1.0, 2.0, 3.0]), "2.00 / 3.00");
        assert_eq!(fmt_med_p99(&[]), "–");
        assert_eq!(fmt_ratio(Some(3.0), Some(2.0)), "1.5×");
        assert_eq!(fmt_ratio(Some(3.0), Some(0.0)), "–");
    }
}
