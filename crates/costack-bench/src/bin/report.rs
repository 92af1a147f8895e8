//! Writes `BENCHMARKS.md` and the bar chart from criterion's and callgrind's
//! output. `scripts/bench.sh` runs it after the benchmarks; see that script
//! for the arguments it passes.
//!
//! ```text
//! report --criterion DIR --callgrind DIR --callgrind-n N --commands FILE
//!        --mode MODE --out BENCHMARKS.md --svg docs/bench.svg [--runs DIR]
//! ```
//!
//! `--runs` names the directory of the separate process runs of the core groups (one
//! criterion directory per run, see `costack_bench::runs`): the goal table gives each goal's
//! median, minimum and maximum over them.
//!
//! The "Goals" section of an existing `BENCHMARKS.md` is carried over
//! unchanged; everything else is regenerated.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use costack_bench::catalog::{
    self, COROSENSEI, COSTACK_ASM, COSTACK_UCONTEXT, GROUPS, NESTING_DEPTH,
};
use costack_bench::parse;
use costack_bench::runs::{self, Run, GOALS};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// QEMU's /perf/lifecycle figure on this kind of machine, ns (low, high).
const QEMU_LIFECYCLE_NS: (f64, f64) = (82.0, 104.0);

const GOALS_HEADING: &str = "## Goals";
const GOALS_PLACEHOLDER: &str =
    "_To be filled in by hand; `scripts/bench.sh` keeps this section as it is._\n";

struct Args {
    criterion: PathBuf,
    callgrind: PathBuf,
    callgrind_n: u64,
    commands: PathBuf,
    mode: String,
    out: PathBuf,
    svg: PathBuf,
    runs: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let Some(name) = key.strip_prefix("--") else {
            return Err(format!("unexpected argument {key:?}").into());
        };
        let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        map.insert(name.to_string(), value);
    }
    let mut take = |name: &str| map.remove(name).ok_or_else(|| format!("missing --{name}"));
    let args = Args {
        criterion: take("criterion")?.into(),
        callgrind: take("callgrind")?.into(),
        callgrind_n: take("callgrind-n")?.parse()?,
        commands: take("commands")?.into(),
        mode: take("mode")?,
        out: take("out")?.into(),
        svg: take("svg")?.into(),
        runs: map.remove("runs").map(PathBuf::from),
    };
    if let Some(extra) = map.keys().next() {
        return Err(format!("unknown option --{extra}").into());
    }
    Ok(args)
}

/// One measured benchmark function.
#[derive(Debug, Clone)]
struct Row {
    group: &'static str,
    implementation: &'static str,
    variant: Option<&'static str>,
    ns: f64,
}

impl Row {
    /// The chart cluster this row belongs to, as two label lines: the group,
    /// and what one operation is or which variant.
    fn cluster(&self) -> (String, String) {
        let unit = match self.group {
            "nesting_1000" => Some("per chain"),
            "generator_iter" => Some("per value"),
            _ => None,
        };
        let second = match (self.variant, unit) {
            (Some(v), Some(u)) => format!("{v}, {u}"),
            (Some(v), None) => v.to_string(),
            (None, Some(u)) => u.to_string(),
            (None, None) => String::new(),
        };
        (self.group.to_string(), second)
    }
}

fn collect_rows(criterion: &Path) -> Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for group in GROUPS {
        for &function in group.functions {
            let id = format!("{}/{}", group.name, function);
            match parse::read_criterion_median(criterion, &id)? {
                Some(per_iteration) => {
                    let (implementation, variant) = catalog::split_function(function);
                    rows.push(Row {
                        group: group.name,
                        implementation,
                        variant,
                        ns: per_iteration / group.ops_per_iteration as f64,
                    });
                }
                None => missing.push(id),
            }
        }
    }
    Ok((rows, missing))
}

fn find<'a>(
    rows: &'a [Row],
    group: &str,
    implementation: &str,
    variant: Option<&str>,
) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.group == group && r.implementation == implementation && r.variant == variant)
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        let whole = format!("{ns:.0}");
        // Thin groups of three digits for readability.
        let mut out = String::new();
        for (i, ch) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                out.push('\u{202f}');
            }
            out.push(ch);
        }
        out
    }
}

/// A duration given in nanoseconds, with a unit and three significant digits
/// at most: `3.25 ns`, `412 ns`, `9.48 µs`, `14.4 ms`.
fn fmt_duration(ns: f64) -> String {
    let (value, unit) = if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    // Axis ticks are powers of ten: drop the zero decimals.
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text} {unit}")
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => format!("{r:.2}"),
        _ => "—".to_string(),
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The "Goals" section of the previous report, heading included, and every
/// section after it (such as `## NBD server`, which `scripts/nbd-bench.sh`
/// writes): this report only generates the sections before "Goals".
fn previous_goals(out: &Path) -> String {
    let Ok(text) = fs::read_to_string(out) else {
        return format!("{GOALS_HEADING}\n\n{GOALS_PLACEHOLDER}");
    };
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_end() == GOALS_HEADING {
            inside = true;
        }
        if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    if section.is_empty() {
        format!("{GOALS_HEADING}\n\n{GOALS_PLACEHOLDER}")
    } else {
        section
    }
}

/// The shapes `switch_count` counts, as `bench.sh` names their callgrind files: the round trip
/// on each backend and corosensei, then costack's other shapes.
const CALLGRIND_LABELS: &[&str] = &[
    COSTACK_ASM,
    COSTACK_UCONTEXT,
    COROSENSEI,
    "costack-create",
    "costack-handoff",
    "costack-cost",
];

/// The most instructions a costack round trip may take (issue 16's goal).
const ROUNDTRIP_INSTRUCTIONS_GOAL: f64 = 40.0;

/// The most round trips' worth of instructions a `CoMutex` hand-off may take (issue 16's goal).
const HANDOFF_ROUND_TRIPS_GOAL: f64 = 3.0;

struct Callgrind {
    label: &'static str,
    total_n: u64,
    total_2n: u64,
}

fn read_callgrind(dir: &Path, n: u64) -> Vec<Callgrind> {
    let mut found = Vec::new();
    for &label in CALLGRIND_LABELS {
        let read = |count: u64| {
            fs::read_to_string(dir.join(format!("{label}-{count}.out")))
                .ok()
                .and_then(|t| parse::callgrind_total(&t))
        };
        if let (Some(total_n), Some(total_2n)) = (read(n), read(2 * n)) {
            found.push(Callgrind {
                label,
                total_n,
                total_2n,
            });
        }
    }
    found
}

fn ratio_of(rows: &[Row], (g1, i1): (&str, &str), (g2, i2): (&str, &str)) -> Option<f64> {
    Some(find(rows, g1, i1, None)?.ns / find(rows, g2, i2, None)?.ns)
}

fn render_markdown(
    args: &Args,
    rows: &[Row],
    missing: &[String],
    callgrind: &[Callgrind],
    runs: &[(PathBuf, Run)],
) -> Result<String> {
    let mut md = String::new();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let kernel = command_output("uname", &["-r"]).unwrap_or_else(|| "unknown".into());
    let rustc = command_output("rustc", &["-V"]).unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let commands = fs::read_to_string(&args.commands)
        .map_err(|e| format!("{}: {e}", args.commands.display()))?;

    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Generated by `scripts/bench.sh` from the `costack-bench` crate; rerun it rather than \
         editing this file (the **Goals** section is kept across runs). Compare ratios within one \
         run: the machine is shared and noisy, so absolute figures drift between runs.\n"
    )?;
    writeln!(md, "## Machine\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| CPU | {} |", cpu_model())?;
    writeln!(md, "| nproc | {nproc} |")?;
    writeln!(md, "| kernel | {kernel} |")?;
    writeln!(md, "| compiler | {rustc} |")?;
    writeln!(md, "| date | {date} |")?;
    writeln!(md, "| mode | {} |\n", args.mode)?;

    writeln!(md, "## Commands\n")?;
    writeln!(md, "```sh\n{}```\n", commands)?;

    writeln!(md, "## Results\n")?;
    writeln!(
        md,
        "Median of criterion's samples, in nanoseconds per operation (wall time). \
         **× corosensei** and **× costack** divide the row's time by corosensei's and by \
         costack's (assembly backend) in the same group and variant: above 1 is slower. \
         `costack-ucontext` is costack built with its `ucontext` feature (libc `swapcontext` \
         backend), measured in the second run.\n"
    )?;
    writeln!(md, "| group | operation |\n|---|---|")?;
    for g in GROUPS {
        writeln!(md, "| `{}` | {} |", g.name, g.operation)?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "| group | implementation | ns/op | × corosensei | × costack |\n|---|---|--:|--:|--:|"
    )?;
    for row in rows {
        let vs = |implementation: &str| {
            find(rows, row.group, implementation, row.variant).map(|r| row.ns / r.ns)
        };
        let name = match row.variant {
            Some(v) => format!("{} ({v})", row.implementation),
            None => row.implementation.to_string(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row.group,
            name,
            fmt_ns(row.ns),
            fmt_ratio(vs(COROSENSEI)),
            fmt_ratio(vs(COSTACK_ASM)),
        )?;
    }
    writeln!(md)?;
    let per_coroutine: Vec<String> = rows
        .iter()
        .filter(|r| r.group == "nesting_1000")
        .map(|r| {
            let name = match r.variant {
                Some(v) => format!("{} ({v})", r.implementation),
                None => r.implementation.to_string(),
            };
            format!("{name} {} ns", fmt_ns(r.ns / NESTING_DEPTH as f64))
        })
        .collect();
    if !per_coroutine.is_empty() {
        writeln!(
            md,
            "`nesting_1000` per coroutine in the chain: {}.\n",
            per_coroutine.join(", ")
        )?;
    }
    writeln!(
        md,
        "Notes: `create_pooled` uses each implementation's way to reuse a stack — costack's \
         per-thread pool, a corosensei `ScopedCoroutine` on one `DefaultStack` kept across \
         iterations; the generator crate cannot reuse stacks and maps a 16 KiB one each time. \
         `nesting_1000` gives corosensei one preallocated stack per level (its best case); costack \
         takes its stacks from its pool, with its bound and watermark raised to hold the whole \
         chain with its memory, or left at their defaults (`default-pool`: then the levels beyond \
         the bound map and unmap their stacks on every chain, and pooled stacks beyond the \
         watermark give their pages back). `generator_iter` draws {} values per generator, created \
         and dropped outside the timed part. `tokio` rows are `yield_now` and `spawn` + `await` on \
         a current-thread runtime; `swapcontext` is a hand-written `makecontext` coroutine (two \
         `swapcontext` per round trip). `comutex` is costack's alone: `uncontended` locks and \
         unlocks a free `CoMutex` inside a coroutine; `handoff` has two coroutines each looping \
         on lock, yield, unlock, and one operation is one pass of the lock from one to the other \
         (two enters and two yields, one of them a deferred wake-up).\n",
        catalog::GENERATOR_ITER_LEN
    )?;
    if !missing.is_empty() {
        writeln!(
            md,
            "Not measured in this run: {}.\n",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }

    writeln!(
        md,
        "![ns per operation, log scale]({})\n",
        svg_link(&args.out, &args.svg)
    )?;

    writeln!(md, "## Instruction counts (callgrind)\n")?;
    if callgrind.is_empty() {
        writeln!(md, "Not measured (valgrind was not available).\n")?;
    } else {
        let n = args.callgrind_n;
        writeln!(
            md,
            "`switch_count SHAPE N` does N operations of one shape: for `costack`, \
             `costack-ucontext` and `corosensei`, N round trips of the `roundtrip` coroutine; \
             `costack-create` creates a coroutine on a pooled stack, runs it to its end and drops \
             it; `costack-cost` is QEMU's /perf/cost shape (create, enter, yield, enter, end, \
             drop); `costack-handoff` passes a `CoMutex` from one coroutine to another (the \
             `comutex` hand-off). It ran under `valgrind --tool=callgrind` with N = {n} and \
             N = {}. Instructions per operation = (Ir(2N) − Ir(N)) / N, which cancels start-up \
             and set-up.\n",
            2 * n
        )?;
        writeln!(
            md,
            "| shape | Ir(N) | Ir(2N) | instructions per operation |\n|---|--:|--:|--:|"
        )?;
        for c in callgrind {
            writeln!(
                md,
                "| {} | {} | {} | {:.1} |",
                c.label,
                c.total_n,
                c.total_2n,
                parse::per_op(c.total_n, c.total_2n, n)
            )?;
        }
        writeln!(md)?;
    }

    writeln!(md, "## Ratios for the goals\n")?;
    render_goal_runs(&mut md, runs, callgrind, args.callgrind_n)?;
    let roundtrip = ratio_of(rows, ("roundtrip", COSTACK_ASM), ("roundtrip", COROSENSEI));
    let pooled = ratio_of(
        rows,
        ("create_pooled", COSTACK_ASM),
        ("create_pooled", COROSENSEI),
    );
    let ucontext = ratio_of(
        rows,
        ("roundtrip", COSTACK_UCONTEXT),
        ("roundtrip", COSTACK_ASM),
    );
    let qemu = find(rows, "create_pooled", COSTACK_ASM, None)
        .map(|r| (QEMU_LIFECYCLE_NS.0 / r.ns, QEMU_LIFECYCLE_NS.1 / r.ns));
    writeln!(md, "From the full run above alone:\n")?;
    writeln!(md, "| ratio | value |\n|---|--:|")?;
    writeln!(
        md,
        "| costack / corosensei, `roundtrip` | {} |",
        fmt_ratio(roundtrip)
    )?;
    writeln!(
        md,
        "| costack / corosensei, `create_pooled` | {} |",
        fmt_ratio(pooled)
    )?;
    writeln!(
        md,
        "| QEMU /perf/lifecycle ({:.0}–{:.0} ns) / costack `create_pooled` | {} |",
        QEMU_LIFECYCLE_NS.0,
        QEMU_LIFECYCLE_NS.1,
        match qemu {
            Some((lo, hi)) => format!("{lo:.1}–{hi:.1}"),
            None => "—".to_string(),
        }
    )?;
    writeln!(
        md,
        "| costack-ucontext / costack, `roundtrip` | {} |",
        fmt_ratio(ucontext)
    )?;
    writeln!(md)?;

    md.push_str(&previous_goals(&args.out));
    Ok(md)
}

/// The goal table over the separate process runs: per goal, each run's figure, their median,
/// minimum and maximum, the goal and whether it is met; then callgrind's exact counts against
/// the instruction goals (the round trip, and a hand-off in round trips).
fn render_goal_runs(
    md: &mut String,
    runs: &[(PathBuf, Run)],
    callgrind: &[Callgrind],
    n: u64,
) -> Result<()> {
    let measured: Vec<Run> = runs.iter().map(|(_, r)| r.clone()).collect();
    writeln!(
        md,
        "Each figure is taken within one process run (`cargo bench` of the core groups, its own \
         process and criterion directory), over {} separate runs; the median, minimum and \
         maximum are over those runs. Ratios are times: below 1 is costack faster.\n",
        runs.len()
    )?;
    writeln!(
        md,
        "| goal | median | min | max | runs | per run | target | met? |\n\
         |---|--:|--:|--:|--:|---|---|---|"
    )?;
    for goal in GOALS {
        let (values, stats) = runs::summarize(goal, &measured);
        let unit = match goal.measure {
            runs::Measure::Ratio(..) => "×",
            runs::Measure::Time(..) => " ns",
        };
        let Some(stats) = stats else {
            writeln!(
                md,
                "| {} | — | — | — | 0 | not measured | {} | — |",
                goal.name,
                goal.describe()
            )?;
            continue;
        };
        let per_run: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        writeln!(
            md,
            "| {} | {:.2}{unit} | {:.2}{unit} | {:.2}{unit} | {} | {} | {} | {} |",
            goal.name,
            stats.median,
            stats.min,
            stats.max,
            stats.runs,
            per_run.join(", "),
            goal.describe(),
            if goal.met(&stats) { "met" } else { "**no**" }
        )?;
    }
    let ir = |label: &str| {
        callgrind
            .iter()
            .find(|c| c.label == label)
            .map(|c| parse::per_op(c.total_n, c.total_2n, n))
    };
    let roundtrip = ir(COSTACK_ASM);
    let exact_rows = [
        (
            "round trip, costack instructions (callgrind)",
            roundtrip,
            ROUNDTRIP_INSTRUCTIONS_GOAL,
            format!("≤ {ROUNDTRIP_INSTRUCTIONS_GOAL}"),
        ),
        (
            "hand-off / round trip, instructions (callgrind)",
            ir("costack-handoff").zip(roundtrip).map(|(h, r)| h / r),
            HANDOFF_ROUND_TRIPS_GOAL,
            format!("≤ {HANDOFF_ROUND_TRIPS_GOAL}×"),
        ),
    ];
    for (name, value, at_most, target) in exact_rows {
        match value {
            Some(v) => writeln!(
                md,
                "| {name} | {v:.1} | | | 1 | exact | {target} | {} |",
                if v <= at_most { "met" } else { "**no**" }
            )?,
            None => writeln!(
                md,
                "| {name} | — | — | — | 0 | not measured | {target} | — |"
            )?,
        }
    }
    writeln!(md)?;
    Ok(())
}

/// Path of the chart relative to the report's directory, for the image link.
fn svg_link(out: &Path, svg: &Path) -> String {
    let base = out.parent().unwrap_or(Path::new(""));
    svg.strip_prefix(base)
        .unwrap_or(svg)
        .to_string_lossy()
        .into_owned()
}

fn color_of(implementation: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match implementation {
        COSTACK_ASM => RGBColor(0xd9, 0x48, 0x01),
        COSTACK_UCONTEXT => RGBColor(0xfd, 0xae, 0x6b),
        COROSENSEI => RGBColor(0x31, 0x82, 0xbd),
        "context" => RGBColor(0x31, 0xa3, 0x54),
        "generator" => RGBColor(0x75, 0x6b, 0xb1),
        "swapcontext" => RGBColor(0x96, 0x96, 0x96),
        "tokio" => RGBColor(0x8c, 0x56, 0x4b),
        "std-thread" => RGBColor(0x25, 0x25, 0x25),
        _ => RGBColor(0xe3, 0x77, 0xc2),
    }
}

/// Chart width per bar slot, in pixels.
const SLOT_PX: u32 = 46;

fn render_svg(path: &Path, rows: &[Row]) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    // Clusters in report order; bars within a cluster in catalog order.
    let mut clusters: Vec<((String, String), Vec<&Row>)> = Vec::new();
    for row in rows {
        let name = row.cluster();
        match clusters.iter_mut().find(|(c, _)| *c == name) {
            Some((_, bars)) => bars.push(row),
            None => clusters.push((name, vec![row])),
        }
    }
    if clusters.is_empty() {
        return Err("no benchmark results to plot".into());
    }
    let mut implementations: Vec<&str> = Vec::new();
    for row in rows {
        if !implementations.contains(&row.implementation) {
            implementations.push(row.implementation);
        }
    }
    let lo = rows.iter().map(|r| r.ns).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.ns).fold(0.0, f64::max);
    let y_lo = 10f64.powf((lo / 2.0).log10().floor());
    let y_hi = 10f64.powf((hi * 3.0).log10().ceil());

    // Each bar takes one slot on the x axis; each cluster gets half a slot of
    // padding on either side and at least three slots, so that its label fits.
    let widths: Vec<f64> = clusters
        .iter()
        .map(|(_, bars)| (bars.len() as f64 + 1.0).max(3.0))
        .collect();
    let starts: Vec<f64> = widths
        .iter()
        .scan(0.0, |acc, w| {
            let start = *acc;
            *acc += w;
            Some(start)
        })
        .collect();
    let total: f64 = widths.iter().sum();
    let bar = |cluster: usize, index: usize, count: usize| {
        let first = starts[cluster] + (widths[cluster] - count as f64) / 2.0;
        let x0 = first + index as f64 + 0.1;
        (x0, x0 + 0.8)
    };

    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let width = (SLOT_PX as f64 * total) as u32 + 110;
    let root = SVGBackend::new(path, (width.max(800), 580)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "costack-bench: time per operation (median, log scale)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..total, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time per operation")
        .y_label_formatter(&|y| fmt_duration(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    for implementation in &implementations {
        let color = color_of(implementation);
        let mut bars = Vec::new();
        for (ci, (_, rows_in)) in clusters.iter().enumerate() {
            for (bi, row) in rows_in.iter().enumerate() {
                if row.implementation == *implementation {
                    let (x0, x1) = bar(ci, bi, rows_in.len());
                    bars.push(Rectangle::new([(x0, y_lo), (x1, row.ns)], color.filled()));
                }
            }
        }
        chart
            .draw_series(bars)?
            .label(*implementation)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    let value_style =
        TextStyle::from(("sans-serif", 10).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let mut labels = Vec::new();
    for (ci, (_, rows_in)) in clusters.iter().enumerate() {
        for (bi, row) in rows_in.iter().enumerate() {
            let (x0, x1) = bar(ci, bi, rows_in.len());
            labels.push(Text::new(
                fmt_duration(row.ns),
                ((x0 + x1) / 2.0, row.ns * 1.08),
                value_style.clone(),
            ));
        }
    }
    chart.draw_series(labels)?;
    // Cluster names under the x axis, placed in pixels on the root area (the
    // axis itself has no ticks), with a faint separator between clusters.
    let name_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let note_style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (ci, ((group, note), _)) in clusters.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(starts[ci] + widths[ci] / 2.0, y_lo));
        root.draw(&Text::new(group.clone(), (px, py + 6), name_style.clone()))?;
        root.draw(&Text::new(note.clone(), (px, py + 22), note_style.clone()))?;
    }
    chart.draw_series(
        starts
            .iter()
            .skip(1)
            .map(|&x| PathElement::new(vec![(x, y_lo), (x, y_hi)], BLACK.mix(0.15))),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (rows, missing) = collect_rows(&args.criterion)?;
    if rows.is_empty() {
        return Err(format!("no criterion results under {}", args.criterion.display()).into());
    }
    let callgrind = read_callgrind(&args.callgrind, args.callgrind_n);
    let runs = match &args.runs {
        Some(dir) => runs::read_runs(dir, GOALS)?,
        None => Vec::new(),
    };
    let md = render_markdown(&args, &rows, &missing, &callgrind, &runs)?;
    render_svg(&args.svg, &rows)?;
    fs::write(&args.out, md)?;
    println!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}
