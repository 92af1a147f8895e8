//! The goal ratios over separate process runs: each run's ratio (costack against corosensei, a
//! hand-off against a round trip…), then their median, minimum and maximum beside the goal.
//!
//! `scripts/bench.sh` runs the core groups `BENCH_RUNS` times, each in its own `cargo bench`
//! process with its own criterion directory (`target/criterion-runs/<run>`); one process's
//! samples share its stack addresses, code layout and neighbours on the machine, so only
//! separate processes show the spread between runs. This module reads those directories
//! ([`read_runs`]), computes each goal's figure per run ([`Goal::value`]) and sums them up
//! ([`Stats`]). A goal whose benchmarks no run measured (a group this build does not have) is
//! reported as not measured rather than dropped.
//!
//! Imports [`parse`] (criterion's estimates) and [`catalog`] (operations per iteration).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::catalog;
use crate::parse;

/// One process run: benchmark ID (`roundtrip/costack`) to nanoseconds per operation.
pub type Run = BTreeMap<String, f64>;

/// What a goal's figure is, from one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// The time of one benchmark over another's (`numerator / denominator`).
    Ratio(&'static str, &'static str),
    /// The time of one benchmark, in nanoseconds per operation.
    Time(&'static str),
}

/// Which side of its bound a goal's figure must be on: every goal here is "at most".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The row's name in the report.
    pub name: &'static str,
    /// The figure measured.
    pub measure: Measure,
    /// The bound the figure must not exceed (a ratio, or nanoseconds).
    pub at_most: f64,
    /// Whether every run must meet the bound (else the median must).
    pub every_run: bool,
}

/// The goals of issue 16 that criterion runs measure, in report order.
pub const GOALS: &[Goal] = &[
    Goal {
        name: "enter + yield round trip, costack / corosensei",
        measure: Measure::Ratio("roundtrip/costack", "roundtrip/corosensei"),
        at_most: 1.0,
        every_run: true,
    },
    Goal {
        name: "create + run + drop (pooled), costack / corosensei",
        measure: Measure::Ratio("create_pooled/costack", "create_pooled/corosensei"),
        at_most: 2.0,
        every_run: false,
    },
    Goal {
        name: "create, enter, yield, enter, end (`cost`), costack, ns",
        measure: Measure::Time("cost/costack"),
        at_most: 20.0,
        every_run: false,
    },
    Goal {
        name: "1000-deep nesting, costack / corosensei",
        measure: Measure::Ratio("nesting_1000/costack", "nesting_1000/corosensei"),
        at_most: 1.5,
        every_run: false,
    },
    Goal {
        name: "CoMutex hand-off / costack round trip",
        measure: Measure::Ratio("comutex/costack/handoff", "roundtrip/costack"),
        at_most: 3.0,
        every_run: false,
    },
];

impl Goal {
    /// The goal's figure in `run`, if the run measured what it needs.
    pub fn value(&self, run: &Run) -> Option<f64> {
        match self.measure {
            Measure::Ratio(num, den) => Some(run.get(num)? / run.get(den)?),
            Measure::Time(id) => run.get(id).copied(),
        }
    }

    /// The benchmark IDs the goal reads.
    pub fn ids(&self) -> Vec<&'static str> {
        match self.measure {
            Measure::Ratio(num, den) => vec![num, den],
            Measure::Time(id) => vec![id],
        }
    }

    /// The goal as text: `≤ 1.0× in every run`, `≤ 20 ns`.
    pub fn describe(&self) -> String {
        let bound = match self.measure {
            Measure::Ratio(..) => format!("≤ {}×", self.at_most),
            Measure::Time(..) => format!("≤ {} ns", self.at_most),
        };
        if self.every_run {
            format!("{bound} in every run")
        } else {
            format!("{bound} (median)")
        }
    }

    /// Whether `stats` meet the goal: the maximum for an every-run goal, else the median.
    pub fn met(&self, stats: &Stats) -> bool {
        let judged = if self.every_run {
            stats.max
        } else {
            stats.median
        };
        judged <= self.at_most
    }
}

/// Median, minimum and maximum of a goal's figures over the runs that measured it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest figure.
    pub min: f64,
    /// The largest figure.
    pub max: f64,
    /// How many runs measured it.
    pub runs: usize,
}

impl Stats {
    /// The statistics of `values`; `None` if there are none (or one is not a number).
    pub fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }
}

/// The figures of `goal` in each of `runs` (skipping those that did not measure it), and their
/// statistics.
pub fn summarize(goal: &Goal, runs: &[Run]) -> (Vec<f64>, Option<Stats>) {
    let values: Vec<f64> = runs.iter().filter_map(|r| goal.value(r)).collect();
    let stats = Stats::of(&values);
    (values, stats)
}

/// Reads one run's criterion directory: every benchmark that `goals` need and the run
/// measured, in nanoseconds per operation (criterion's median over its samples, divided by the
/// group's operations per iteration from the [catalog](catalog::GROUPS), 1 for a group it does
/// not list).
pub fn read_run(criterion_dir: &Path, goals: &[Goal]) -> io::Result<Run> {
    let mut run = Run::new();
    for id in goals.iter().flat_map(Goal::ids) {
        if run.contains_key(id) {
            continue;
        }
        if let Some(per_iteration) = parse::read_criterion_median(criterion_dir, id)? {
            let group = id.split('/').next().unwrap_or(id);
            let ops = catalog::group(group).map_or(1, |g| g.ops_per_iteration);
            run.insert(id.to_string(), per_iteration / ops as f64);
        }
    }
    Ok(run)
}

/// The run directories under `dir` (each a criterion output directory), in name order, and
/// what each measured. A missing `dir` is no runs.
pub fn read_runs(dir: &Path, goals: &[Goal]) -> io::Result<Vec<(PathBuf, Run)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    // Numeric names sort as numbers (run 10 after run 9).
    dirs.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        (name.parse::<u64>().unwrap_or(u64::MAX), name)
    });
    dirs.into_iter()
        .map(|d| read_run(&d, goals).map(|run| (d, run)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, f64)]) -> Run {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn stats_odd_even_and_empty() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 5));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_per_run_then_median() {
        // The ratio is taken within each run, not from the medians of the two sides.
        let runs = [
            run(&[("roundtrip/costack", 4.0), ("roundtrip/corosensei", 4.0)]),
            run(&[("roundtrip/costack", 9.0), ("roundtrip/corosensei", 10.0)]),
            run(&[("roundtrip/costack", 5.0), ("roundtrip/corosensei", 4.0)]),
        ];
        let (values, stats) = summarize(&GOALS[0], &runs);
        assert_eq!(values, vec![1.0, 0.9, 1.25]);
        let stats = stats.unwrap();
        assert_eq!((stats.median, stats.min, stats.max), (1.0, 0.9, 1.25));
        // Every run must be at most 1.0x: the third is not.
        assert!(!GOALS[0].met(&stats));
    }

    #[test]
    fn median_goal_and_time_goal() {
        let handoff = GOALS.iter().find(|g| g.name.contains("hand-off")).unwrap();
        let runs = [
            run(&[("comutex/costack/handoff", 8.0), ("roundtrip/costack", 2.0)]),
            run(&[("comutex/costack/handoff", 5.0), ("roundtrip/costack", 2.0)]),
            run(&[("comutex/costack/handoff", 6.0), ("roundtrip/costack", 2.0)]),
        ];
        let stats = summarize(handoff, &runs).1.unwrap();
        assert_eq!((stats.median, stats.max), (3.0, 4.0));
        assert!(handoff.met(&stats), "the median is judged: 3.0 <= 3.0");

        let cost = GOALS.iter().find(|g| g.name.contains("`cost`")).unwrap();
        assert_eq!(cost.value(&run(&[("cost/costack", 21.5)])), Some(21.5));
        assert!(!cost.met(&Stats::of(&[21.5]).unwrap()));
        assert_eq!(cost.describe(), "≤ 20 ns (median)");
        assert_eq!(GOALS[0].describe(), "≤ 1× in every run");
    }

    #[test]
    fn runs_missing_a_side_are_skipped() {
        let runs = [
            run(&[("create_pooled/costack", 6.0)]),
            run(&[
                ("create_pooled/costack", 6.0),
                ("create_pooled/corosensei", 3.0),
            ]),
        ];
        let (values, stats) = summarize(&GOALS[1], &runs);
        assert_eq!(values, vec![2.0]);
        assert_eq!(stats.unwrap().runs, 1);
        let (values, stats) = summarize(&GOALS[2], &runs);
        assert!(values.is_empty() && stats.is_none());
    }

    /// Writes a criterion `estimates.json` with median `ns` for `id` under `dir`.
    fn estimate(dir: &Path, id: &str, ns: f64) {
        let d = dir.join(id).join("new");
        fs::create_dir_all(&d).unwrap();
        let json = format!(
            r#"{{"mean":{{"point_estimate":{}}},"median":{{"point_estimate":{ns}}}}}"#,
            ns + 1.0
        );
        fs::write(d.join("estimates.json"), json).unwrap();
    }

    #[test]
    fn reads_run_directories_in_numeric_order() {
        let root =
            std::env::temp_dir().join(format!("costack-bench-runs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (name, costack) in [("1", 3.0), ("2", 6.0), ("10", 4.5)] {
            let d = root.join(name);
            estimate(&d, "roundtrip/costack", costack);
            estimate(&d, "roundtrip/corosensei", 3.0);
            estimate(&d, "comutex/costack/handoff", 12.0);
        }
        // A stray file is not a run.
        fs::write(root.join("notes.txt"), "x").unwrap();
        let runs = read_runs(&root, GOALS).unwrap();
        let names: Vec<_> = runs
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1", "2", "10"]);
        let runs: Vec<Run> = runs.into_iter().map(|(_, r)| r).collect();
        assert_eq!(runs[2].get("roundtrip/costack"), Some(&4.5));
        assert_eq!(runs[0].len(), 3, "only what was measured: {:?}", runs[0]);
        let (values, _) = summarize(&GOALS[0], &runs);
        assert_eq!(values, vec![1.0, 2.0, 1.5]);
        let handoff = GOALS.iter().find(|g| g.name.contains("hand-off")).unwrap();
        assert_eq!(summarize(handoff, &runs).0, vec![4.0, 2.0, 12.0 / 4.5]);
        fs::remove_dir_all(&root).unwrap();
        assert!(read_runs(&root, GOALS).unwrap().is_empty());
    }
}
