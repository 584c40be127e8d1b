//! The run directory: every file a training run writes, in one place.
//!
//! ```text
//! RUN/config.toml              the resolved config
//! RUN/summary.csv              one row per epoch (empty cells where an epoch was not evaluated)
//!                              epochs are numbered from 1 in every file, as on the console
//! RUN/steps.csv                one row every `train.log_every` optimizer steps
//! RUN/metrics.jsonl            one JSON line per epoch (and per eval: the energy figure)
//! RUN/energy.json              the last eval's energy report
//! RUN/curves.png               learning curves
//! RUN/best_weights.safetensors the best model as a reference state_dict
//! RUN/checkpoints/last.safetensors, best.safetensors, epoch_NNNN.safetensors
//! ```
//!
//! A directory that already holds a run (a checkpoint or metrics) is only written into when the
//! run resumes it or when it is explicitly overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint::EpochRecord;
use crate::energy::EnergyReport;
use crate::error::{Error, Result};

/// What to do with a directory that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse with an error that names the directory (the default).
    #[default]
    Refuse,
    /// Continue it (`--resume`): earlier outputs are kept, later ones rewritten.
    Resume,
    /// Delete the run's own files first (`--overwrite`); other files are left alone.
    Overwrite,
}

/// The files of one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

/// The files a run writes at the top of its directory.
const OWN_FILES: [&str; 7] = [
    "config.toml",
    "summary.csv",
    "steps.csv",
    "metrics.jsonl",
    "energy.json",
    "curves.png",
    "best_weights.safetensors",
];

impl RunDir {
    /// A run directory at `root`, without touching the disk.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Whether `root` already holds a run: a checkpoint, or metrics (`metrics.jsonl`,
    /// `summary.csv` or `steps.csv` with content). A folder that holds only the `config.toml`
    /// of a run that failed before its first step was logged is not a run to protect: a new
    /// run takes it over.
    pub fn holds_run(root: &Path) -> bool {
        let d = Self::at(root);
        let written = |p: PathBuf| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
        let checkpoint = std::fs::read_dir(d.checkpoints()).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        });
        checkpoint || written(d.metrics()) || written(d.summary()) || written(d.steps())
    }

    /// Create the directory (and `checkpoints/`) for a run, applying `existing` to one that
    /// already holds a run.
    pub fn prepare(root: impl Into<PathBuf>, existing: Existing) -> Result<Self> {
        let d = Self::at(root);
        if Self::holds_run(&d.root) {
            match existing {
                Existing::Refuse => {
                    return Err(Error::run_dir(
                        d.root.clone(),
                        format!(
                            "{} already holds a run; pass --resume to continue it, --overwrite \
                             to replace it, or another --output",
                            d.root.display()
                        ),
                    ))
                }
                Existing::Resume => {}
                Existing::Overwrite => d.remove_own_files()?,
            }
        }
        std::fs::create_dir_all(d.checkpoints()).map_err(|e| io_error(&d.checkpoints(), e))?;
        Ok(d)
    }

    fn remove_own_files(&self) -> Result<()> {
        for f in OWN_FILES {
            remove_if_present(&self.root.join(f))?;
        }
        if let Ok(rd) = std::fs::read_dir(self.checkpoints()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "safetensors") {
                    remove_if_present(&p)?;
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.tensorboard()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains("tfevents") {
                    remove_if_present(&e.path())?;
                }
            }
        }
        Ok(())
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `summary.csv`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.csv")
    }
    /// `steps.csv`.
    pub fn steps(&self) -> PathBuf {
        self.root.join("steps.csv")
    }
    /// `tb/`, the TensorBoard event files.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tb")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `energy.json`.
    pub fn energy(&self) -> PathBuf {
        self.root.join("energy.json")
    }
    /// `curves.png`.
    pub fn curves(&self) -> PathBuf {
        self.root.join("curves.png")
    }
    /// `best_weights.safetensors` (reference key names, for `statten eval` or PyTorch).
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("best_weights.safetensors")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last.safetensors`: written after every epoch and every mid-epoch checkpoint.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    /// `checkpoints/best.safetensors`.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }
    /// `checkpoints/epoch_NNNN.safetensors` after `epochs_done` epochs.
    pub fn epoch_checkpoint(&self, epochs_done: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("epoch_{epochs_done:04}.safetensors"))
    }

    /// The `epoch_NNNN` checkpoints present, oldest first.
    pub fn epoch_checkpoints(&self) -> Vec<PathBuf> {
        let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(self.checkpoints())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        let n = p
                            .file_name()?
                            .to_str()?
                            .strip_prefix("epoch_")?
                            .strip_suffix(".safetensors")?
                            .parse()
                            .ok()?;
                        Some((n, p))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// Delete all but the newest `keep` `epoch_NNNN` checkpoints (`keep` = 0: keep all).
    pub fn prune_epoch_checkpoints(&self, keep: usize) -> Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let all = self.epoch_checkpoints();
        for p in &all[..all.len().saturating_sub(keep)] {
            remove_if_present(p)?;
        }
        Ok(())
    }

    /// Write `config.toml`.
    pub fn write_config(&self, toml: &str) -> Result<()> {
        atomic_write(&self.config(), toml.as_bytes())
    }

    /// Rewrite `summary.csv` from the history. An epoch without evaluation has empty eval
    /// cells; `finished_at` is the epoch's end in UTC (ISO 8601).
    ///
    /// A run with model EMA has three more columns, `ema_eval_loss`, `ema_eval_top1` and
    /// `ema_eval_top5`.
    pub fn write_summary(&self, history: &[EpochRecord]) -> Result<()> {
        let ema = history.iter().any(EpochRecord::has_ema_eval);
        let mut s = String::from(
            "epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,images_per_s,seconds,\
             finished_at",
        );
        s += if ema {
            ",ema_eval_loss,ema_eval_top1,ema_eval_top5\n"
        } else {
            "\n"
        };
        let cell = |v: f64, prec: usize| {
            if v.is_finite() {
                format!("{v:.prec$}")
            } else {
                String::new()
            }
        };
        for r in history {
            s += &format!(
                "{},{},{},{},{},{},{:.8e},{},{},{}",
                r.epoch + 1,
                cell(r.train_loss, 6),
                cell(r.train_top1, 4),
                cell(r.eval_loss, 6),
                cell(r.eval_top1, 4),
                cell(r.eval_top5, 4),
                r.lr,
                cell(r.images_per_s, 2),
                cell(r.seconds, 2),
                if r.finished_at > 0 {
                    utc_timestamp(r.finished_at)
                } else {
                    String::new()
                }
            );
            if ema {
                s += &format!(
                    ",{},{},{}",
                    cell(r.ema_eval_loss, 6),
                    cell(r.ema_eval_top1, 4),
                    cell(r.ema_eval_top5, 4)
                );
            }
            s.push('\n');
        }
        atomic_write(&self.summary(), s.as_bytes())
    }

    /// Append rows to `steps.csv` (the header first when the file is new).
    pub fn append_steps(&self, rows: &[StepRecord]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.steps();
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let mut s = String::new();
        if new {
            s += StepRecord::HEADER;
            s.push('\n');
        }
        for r in rows {
            s += &r.to_csv();
            s.push('\n');
        }
        f.write_all(s.as_bytes()).map_err(|e| io_error(&path, e))
    }

    /// On resume: keep only the `steps.csv` rows up to global step `step` (those the
    /// checkpoint's state had run), so that steps lost to a crash are not listed twice.
    pub fn trim_steps(&self, step: u64) -> Result<()> {
        let path = self.steps();
        let Ok(old) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut s = String::new();
        for (i, line) in old.lines().enumerate() {
            let keep = i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v <= step);
            if keep {
                s += line;
                s.push('\n');
            }
        }
        atomic_write(&path, s.as_bytes())
    }

    /// Write the eval's energy report and append its one-line figure to `metrics.jsonl`.
    pub fn write_energy(&self, epoch: usize, rep: &EnergyReport) -> Result<()> {
        let json = serde_json::to_string_pretty(rep)
            .map_err(|e| Error::run_dir(self.root.clone(), e.to_string()))?;
        atomic_write(&self.energy(), json.as_bytes())?;
        self.append_metric(&serde_json::json!({
            "event": "energy",
            "epoch": epoch + 1,
            "energy_mj": rep.energy_mj,
            "mean_firing_rate": rep.mean_rate,
            "sops": rep.sops,
        }))
    }

    /// Append an epoch's record to `metrics.jsonl`.
    pub fn append_epoch(&self, rec: &EpochRecord) -> Result<()> {
        self.append_metric(&self.metric_of(rec)?)
    }

    /// An epoch's `metrics.jsonl` line: its record, the epoch numbered from 1 as on the console
    /// and in `summary.csv` and `steps.csv`.
    fn metric_of(&self, rec: &EpochRecord) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(rec)
            .map_err(|e| Error::run_dir(self.root.clone(), e.to_string()))?;
        v["epoch"] = serde_json::json!(rec.epoch + 1);
        Ok(v)
    }

    fn append_metric(&self, v: &serde_json::Value) -> Result<()> {
        let path = self.metrics();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        writeln!(f, "{v}").map_err(|e| io_error(&path, e))
    }

    /// On resume: rewrite `metrics.jsonl` to hold exactly the epochs of `history` (the
    /// checkpoint's), each with the energy line of the old file for that epoch if it had one, so
    /// that epochs run after the checkpoint and lost to a crash are not listed twice.
    pub fn rewrite_metrics(&self, history: &[EpochRecord]) -> Result<()> {
        let path = self.metrics();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut energy: std::collections::HashMap<u64, String> = Default::default();
        for line in old.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v["event"] == "energy" {
                    if let Some(e) = v["epoch"].as_u64() {
                        energy.insert(e, line.to_string());
                    }
                }
            }
        }
        let mut s = String::new();
        for r in history {
            if let Some(l) = energy.get(&(r.epoch as u64 + 1)) {
                s += l;
                s.push('\n');
            }
            s += &self.metric_of(r)?.to_string();
            s.push('\n');
        }
        atomic_write(&path, s.as_bytes())
    }
}

fn remove_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::run_dir(
            p,
            format!("{}: cannot remove: {e}", p.display()),
        )),
    }
}

/// Write to a temporary name beside `path`, then rename: a crash leaves the old file or the new.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| Error::run_dir(path, format!("{}: cannot write: {e}", path.display())))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::run_dir(path, format!("{}: {e}", path.display()))
}

/// One row of `steps.csv`: the mean of the optimizer steps since the previous row.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Global optimizer step (1-based, counted over all epochs).
    pub step: u64,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Batch within the epoch (1-based: batches done).
    pub batch: usize,
    /// Mean training loss of the steps since the previous row.
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Training images per second since the previous row.
    pub images_per_s: f64,
    /// Seconds since the Unix epoch (UTC).
    pub time: u64,
}

impl StepRecord {
    /// The CSV header.
    pub const HEADER: &'static str = "step,epoch,batch,loss,lr,images_per_s,time";

    fn to_csv(&self) -> String {
        let loss = if self.loss.is_finite() {
            format!("{:.6}", self.loss)
        } else {
            String::new()
        };
        format!(
            "{},{},{},{loss},{:.8e},{:.2},{}",
            self.step,
            self.epoch + 1,
            self.batch,
            self.lr,
            self.images_per_s,
            utc_timestamp(self.time)
        )
    }
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the Unix epoch as ISO 8601 UTC, e.g. `2026-12-03T14:05:22Z`.
pub fn utc_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("statten-rundir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rec(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 1.0 / (epoch + 1) as f64,
            train_top1: 10.0,
            eval_loss: f64::NAN,
            eval_top1: f64::NAN,
            eval_top5: f64::NAN,
            lr: 1e-3,
            images_per_s: 1.0,
            seconds: 1.0,
            finished_at: 1_796_306_722,
            ema_eval_loss: f64::NAN,
            ema_eval_top1: f64::NAN,
            ema_eval_top5: f64::NAN,
        }
    }

    #[test]
    fn an_existing_run_is_refused_unless_resumed_or_overwritten() {
        let root = tmp("existing");
        let d = RunDir::prepare(&root, Existing::Refuse).unwrap();
        d.write_config("x = 1\n").unwrap();
        std::fs::write(d.last_checkpoint(), b"ck").unwrap();
        std::fs::write(root.join("notes.txt"), b"mine").unwrap();
        let e = RunDir::prepare(&root, Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&root.display().to_string()) && e.contains("--resume"),
            "{e}"
        );
        RunDir::prepare(&root, Existing::Resume).unwrap();
        assert!(d.last_checkpoint().exists());
        RunDir::prepare(&root, Existing::Overwrite).unwrap();
        assert!(!d.last_checkpoint().exists() && !d.config().exists());
        assert!(
            root.join("notes.txt").exists(),
            "a file the run did not write was removed"
        );
    }

    /// A run that failed before it logged anything (its config.toml and an empty checkpoints/)
    /// does not block its folder; one with a checkpoint or metrics does.
    #[test]
    fn a_run_that_wrote_nothing_does_not_block_its_folder() {
        let root = tmp("failed-early");
        let d = RunDir::prepare(&root, Existing::Refuse).unwrap();
        d.write_config("x = 1\n").unwrap();
        assert!(!RunDir::holds_run(&root));
        RunDir::prepare(&root, Existing::Refuse).expect("the folder is taken over");
        std::fs::write(d.metrics(), b"").unwrap();
        assert!(!RunDir::holds_run(&root), "an empty metrics file is no run");
        std::fs::write(d.steps(), b"step\n1\n").unwrap();
        assert!(RunDir::holds_run(&root));
        std::fs::remove_file(d.steps()).unwrap();
        std::fs::write(d.epoch_checkpoint(3), b"ck").unwrap();
        assert!(
            RunDir::holds_run(&root),
            "an epoch checkpoint alone is a run"
        );
    }

    #[test]
    fn rewritten_metrics_hold_each_epoch_once_with_its_energy_line() {
        let d = RunDir::prepare(tmp("metrics"), Existing::Refuse).unwrap();
        // Epochs 0..3 were logged (and epoch 2 twice, as after an earlier crash), but the
        // checkpoint holds two epochs.
        for e in [0, 1, 2, 2] {
            d.append_metric(&serde_json::json!({"event": "energy", "epoch": e + 1}))
                .unwrap();
            d.append_epoch(&rec(e)).unwrap();
        }
        d.rewrite_metrics(&[rec(0), rec(1)]).unwrap();
        let text = std::fs::read_to_string(d.metrics()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["event"], "energy");
        assert_eq!(lines[0]["epoch"], 1, "numbered from 1, as on the console");
        assert_eq!(lines[1]["epoch"], 1);
        assert_eq!(lines[3]["epoch"], 2);
    }

    #[test]
    fn pruning_keeps_the_newest_epoch_checkpoints() {
        let d = RunDir::prepare(tmp("prune"), Existing::Refuse).unwrap();
        for e in [1, 2, 3, 10] {
            std::fs::write(d.epoch_checkpoint(e), b"x").unwrap();
        }
        d.prune_epoch_checkpoints(2).unwrap();
        assert_eq!(
            d.epoch_checkpoints(),
            vec![d.epoch_checkpoint(3), d.epoch_checkpoint(10)]
        );
        d.prune_epoch_checkpoints(0).unwrap();
        assert_eq!(d.epoch_checkpoints().len(), 2);
    }

    #[test]
    fn timestamps_are_iso_8601_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_796_306_722), "2026-12-03T14:05:22Z");
    }

    #[test]
    fn summary_cells_of_epochs_without_eval_are_empty() {
        let root = tmp("summary-empty");
        let d = RunDir::prepare(&root, Existing::Refuse).unwrap();
        let mut evaluated = rec(1);
        evaluated.eval_loss = 0.5;
        evaluated.eval_top1 = 80.0;
        evaluated.eval_top5 = 99.0;
        d.write_summary(&[rec(0), evaluated]).unwrap();
        let csv = std::fs::read_to_string(d.summary()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",seconds,finished_at"), "{csv}");
        assert!(!csv.contains("NaN"), "{csv}");
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells.len(), 10);
        assert_eq!(&cells[3..6], &["", "", ""], "{csv}");
        assert_eq!(cells[9], "2026-12-03T14:05:22Z");
        let cells: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(&cells[3..6], &["0.500000", "80.0000", "99.0000"], "{csv}");
    }

    #[test]
    fn steps_log_appends_and_resume_trims_it() {
        let root = tmp("steps");
        let d = RunDir::prepare(&root, Existing::Refuse).unwrap();
        let row = |step| StepRecord {
            step,
            epoch: 0,
            batch: step as usize,
            loss: 1.5,
            lr: 1e-3,
            images_per_s: 10.0,
            time: 0,
        };
        d.append_steps(&[row(10), row(20)]).unwrap();
        d.append_steps(&[row(30)]).unwrap();
        let csv = std::fs::read_to_string(d.steps()).unwrap();
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert_eq!(csv.lines().next(), Some(StepRecord::HEADER));
        d.trim_steps(20).unwrap();
        let csv = std::fs::read_to_string(d.steps()).unwrap();
        let steps: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(steps, ["10", "20"]);
    }
}
