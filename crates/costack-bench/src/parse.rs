//! Readers for the files the benchmark tools leave behind.

use std::fs;
use std::io;
use std::path::Path;

/// Median point estimate, in nanoseconds per criterion iteration, from the
/// text of a criterion `estimates.json`.
///
/// Returns `None` if the text is not JSON or has no `median.point_estimate`
/// number.
pub fn criterion_median(json: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value.get("median")?.get("point_estimate")?.as_f64()
}

/// Median of one criterion benchmark, in nanoseconds per iteration.
///
/// `criterion_dir` is criterion's output directory (`target/criterion`) and
/// `id` the benchmark ID such as `roundtrip/costack` or
/// `comutex/costack/handoff`. Criterion writes the latest run's estimates to
/// `<criterion_dir>/<id>/new/estimates.json`. Returns `Ok(None)` when that
/// benchmark has not been run.
pub fn read_criterion_median(criterion_dir: &Path, id: &str) -> io::Result<Option<f64>> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    match fs::read_to_string(&path) {
        Ok(text) => criterion_median(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no median.point_estimate", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Total event count (instructions read, `Ir`) from the text of a callgrind
/// output file.
///
/// Callgrind ends its file with a `summary:` line (older versions write
/// `totals:`); the first number on it is the first event, `Ir` by default.
pub fn callgrind_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("summary:"))
        .or_else(|| text.lines().find(|l| l.starts_with("totals:")))?;
    let (_, numbers) = line.split_once(':')?;
    numbers.split_whitespace().next()?.parse().ok()
}

/// Instructions per operation from two callgrind totals: a run of `n`
/// operations and one of `2 * n`. The difference cancels start-up, set-up and
/// tear-down, which both runs share.
pub fn per_op(total_n: u64, total_2n: u64, n: u64) -> f64 {
    (total_2n as f64 - total_n as f64) / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_from_estimates() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,
            "lower_bound":3.0,"upper_bound":4.0},"point_estimate":3.5,"standard_error":0.1},
            "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":3.1,
            "upper_bound":3.3},"point_estimate":3.25,"standard_error":0.05}}"#;
        assert_eq!(criterion_median(json), Some(3.25));
        assert_eq!(criterion_median("{}"), None);
        assert_eq!(criterion_median("not json"), None);
    }

    #[test]
    fn missing_estimates_are_none() {
        let dir = Path::new("/nonexistent/criterion");
        assert!(read_criterion_median(dir, "roundtrip/costack")
            .unwrap()
            .is_none());
    }

    #[test]
    fn callgrind_summary() {
        let text =
            "version: 1\ncmd: ./x\nevents: Ir\nfl=(1) a.c\nfn=(1) main\n3 10\n\nsummary: 123456\n";
        assert_eq!(callgrind_total(text), Some(123456));
        assert_eq!(callgrind_total("totals: 42 7\n"), Some(42));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn per_op_difference() {
        assert_eq!(
            per_op(1_000_000 + 5_000_000, 2_000_000 + 5_000_000, 100_000),
            10.0
        );
    }
}
