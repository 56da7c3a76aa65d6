//! The Markdown report of an experiment.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Args, Budget, Scale};

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year}-{month:02}-{day:02}")
}

/// Writes the report: what ran, where, how long, then the experiment's own body.
pub fn write(path: &Path, args: &Args, scale: &Scale, body: &str, wall_s: f64) -> Result<()> {
    let budget = match args.budget {
        Budget::Small => "small",
        Budget::Full => "full",
    };
    let steps = args
        .steps
        .map_or(String::new(), |s| format!(" --steps {s}"));
    let samples_flag = args
        .samples
        .map_or(String::new(), |n| format!(" --samples {n}"));
    if matches!(
        args.name,
        super::Experiment::Samplers | super::Experiment::Guidance
    ) {
        let text = format!(
            "# Experiment: {name}\n\n\
             Command: `cargo xtask experiment {name} --checkpoint {run} --samples {n}`  \n\
             Machine: {machine}; {date}; wall time {minutes:.1} min.\n\n{body}\n",
            run = args
                .checkpoint
                .as_deref()
                .unwrap_or(Path::new("RUN"))
                .display(),
            name = args.name.slug(),
            n = args.samples.unwrap_or(1000),
            machine = machine(),
            date = today(),
            minutes = wall_s / 60.0,
        );
        return write_file(path, &text);
    }
    let (data, scoring) = match args.name {
        super::Experiment::Tint => (
            format!(" --data {}", args.data.display()),
            "each channel's mean measured against the training images'",
        ),
        _ => (
            String::new(),
            "scored against the MNIST test split with the committed classifier \
             (`docs/evaluation.md`; the floor is real-vs-real at the same n)",
        ),
    };
    let text = format!(
        "# Experiment: {name}\n\n\
         Command: `cargo xtask experiment {name} --budget {budget}{steps}{samples_flag}{data}`  \n\
         Data: {dataset:?}; {train_steps} optimizer steps per trained arm at batch {batch}; \
         {samples} samples per row, {scoring}.  \n\
         Machine: {machine}; {date}; wall time {minutes:.1} min (arms trained by an earlier \
         experiment are reused and marked so).\n\n{body}\n",
        name = args.name.slug(),
        dataset = scale.dataset,
        train_steps = scale.steps,
        batch = scale.batch_size,
        samples = scale.samples,
        machine = machine(),
        date = today(),
        minutes = wall_s / 60.0,
    );
    write_file(path, &text)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
