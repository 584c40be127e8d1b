//! Learning-curve plots (`curves.png`, redrawn each epoch, and `statten plot RUN…`).
//!
//! Three panels under the run's name: **loss** (train, eval), **accuracy in %** (train top-1,
//! eval top-1, eval top-5) and the **learning rate**, each with axis titles, tick numbers, a grid
//! and a legend. The x axis is in epochs: where the run logged steps (`steps.csv`), the train
//! loss and the learning rate are drawn at every logged step (at fractional epochs, epoch +
//! batch / batches per epoch), with the per-epoch evaluations on top; a run with model EMA
//! adds the EMA's eval loss and top-1. Drawn with `plotters` into an RGB buffer and encoded with `image`; the text
//! uses DejaVu Sans, bundled in the binary, so no system font is needed. When several runs are
//! overlaid each run has its colour, and train curves are dashed, eval curves solid.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::checkpoint::EpochRecord;

const W: u32 = 1500;
const H: u32 = 520;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// The per-epoch series of one run (missing values: epochs without eval).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// The run's name (legend and title).
    pub name: String,
    /// 1-based epoch numbers.
    pub epoch: Vec<f64>,
    /// Mean train loss.
    pub train_loss: Vec<Option<f64>>,
    /// Eval loss.
    pub eval_loss: Vec<Option<f64>>,
    /// Train top-1 (%).
    pub train_top1: Vec<Option<f64>>,
    /// Eval top-1 (%).
    pub eval_top1: Vec<Option<f64>>,
    /// Eval top-5 (%).
    pub eval_top5: Vec<Option<f64>>,
    /// Learning rate.
    pub lr: Vec<Option<f64>>,
    /// The EMA model's eval loss (`train.model_ema`).
    pub ema_eval_loss: Vec<Option<f64>>,
    /// The EMA model's eval top-1 (%).
    pub ema_eval_top1: Vec<Option<f64>>,
    /// The logged steps (`steps.csv`): where they are in epochs (from 0; 1.0 is the end of
    /// the first epoch, where its evaluation is drawn).
    pub step_x: Vec<f64>,
    /// Mean train loss of each logged step's window.
    pub step_loss: Vec<Option<f64>>,
    /// Learning rate of each logged step.
    pub step_lr: Vec<Option<f64>>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl Curves {
    /// From a run's history.
    pub fn from_history(name: &str, history: &[EpochRecord]) -> Self {
        Self {
            name: name.to_string(),
            epoch: history.iter().map(|r| (r.epoch + 1) as f64).collect(),
            train_loss: history.iter().map(|r| finite(r.train_loss)).collect(),
            eval_loss: history.iter().map(|r| finite(r.eval_loss)).collect(),
            train_top1: history.iter().map(|r| finite(r.train_top1)).collect(),
            eval_top1: history.iter().map(|r| finite(r.eval_top1)).collect(),
            eval_top5: history.iter().map(|r| finite(r.eval_top5)).collect(),
            lr: history.iter().map(|r| finite(r.lr)).collect(),
            ema_eval_loss: history.iter().map(|r| finite(r.ema_eval_loss)).collect(),
            ema_eval_top1: history.iter().map(|r| finite(r.ema_eval_top1)).collect(),
            ..Default::default()
        }
    }

    /// With the rows of a `steps.csv` (none when the file does not exist). `batches` is the
    /// run's batches per epoch; without it, it is found from the rows (exactly from a row past
    /// the first epoch, else the last batch logged).
    pub fn with_steps(mut self, path: &Path, batches: Option<usize>) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let table = NumberTable::parse(&text, path);
        let cols = [
            table.col("step")?,
            table.col("epoch")?,
            table.col("batch")?,
            table.col("loss")?,
            table.col("lr")?,
        ];
        let rows: Vec<[Option<f64>; 5]> = table
            .rows
            .iter()
            .map(|r| cols.map(|k| r.get(k).copied().flatten()))
            .filter(|r| r[0].is_some() && r[1].is_some() && r[2].is_some())
            .collect();
        // Epochs are numbered from 1 in steps.csv (from 0 in files of older runs).
        let first = rows.iter().filter_map(|r| r[1]).fold(f64::MAX, f64::min);
        let base = if first == 0.0 { 0.0 } else { 1.0 };
        let nb = batches.map(|b| b as f64).or_else(|| {
            rows.iter()
                .find(|r| r[1] > Some(base))
                .and_then(|r| Some((r[0]? - r[2]?) / (r[1]? - base)))
                .or_else(|| rows.iter().filter_map(|r| r[2]).reduce(f64::max))
        });
        let Some(nb) = nb.filter(|&n| n > 0.0) else {
            return Ok(self);
        };
        for r in rows {
            self.step_x
                .push(r[1].unwrap_or(base) - base + r[2].unwrap_or(0.0) / nb);
            self.step_loss.push(r[3]);
            self.step_lr.push(r[4]);
        }
        Ok(self)
    }

    fn step_points(&self, v: &[Option<f64>]) -> Vec<(f64, f64)> {
        pairs(&self.step_x, v)
    }

    /// From a run directory's `summary.csv` (columns found by their header names; empty or
    /// unparsable cells are missing values).
    pub fn from_run_dir(dir: &Path) -> Result<Self, String> {
        let path = dir.join("summary.csv");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("{}: empty file", path.display()));
        }
        let table = NumberTable::parse(&text, &path);
        let col = |name: &str| table.col(name);
        let cols = [
            col("epoch")?,
            col("train_loss")?,
            col("eval_loss")?,
            col("train_top1")?,
            col("eval_top1")?,
            col("eval_top5")?,
            col("lr")?,
        ];
        // Only in runs with model EMA.
        let ema_cols = [col("ema_eval_loss").ok(), col("ema_eval_top1").ok()];
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut c = Curves {
            name,
            ..Default::default()
        };
        for (i, cells) in table.rows.iter().enumerate() {
            let cell = |k: Option<usize>| k.and_then(|k| cells.get(k).copied().flatten());
            let get = |k: usize| cell(Some(cols[k]));
            let epoch = get(0)
                .ok_or_else(|| format!("{}: line {}: no epoch number", path.display(), i + 2))?;
            c.epoch.push(epoch);
            c.train_loss.push(get(1));
            c.eval_loss.push(get(2));
            c.train_top1.push(get(3));
            c.eval_top1.push(get(4));
            c.eval_top5.push(get(5));
            c.lr.push(get(6));
            c.ema_eval_loss.push(cell(ema_cols[0]));
            c.ema_eval_top1.push(cell(ema_cols[1]));
        }
        // Runs written before epochs were numbered from 1 in summary.csv start at 0.
        if c.epoch.first() == Some(&0.0) {
            c.epoch.iter_mut().for_each(|e| *e += 1.0);
        }
        c.with_steps(&dir.join("steps.csv"), None)
    }

    fn points(&self, v: &[Option<f64>]) -> Vec<(f64, f64)> {
        pairs(&self.epoch, v)
    }
}

/// The `(x, y)` points of a series where it has a value.
fn pairs(x: &[f64], y: &[Option<f64>]) -> Vec<(f64, f64)> {
    x.iter()
        .zip(y)
        .filter_map(|(x, y)| y.map(|y| (*x, y)))
        .collect()
}

/// A CSV file of numbers: its header, and each row's cells as finite numbers (empty or
/// unparsable cells are missing values).
struct NumberTable<'a> {
    path: &'a Path,
    header: Vec<String>,
    rows: Vec<Vec<Option<f64>>>,
}

impl<'a> NumberTable<'a> {
    fn parse(text: &str, path: &'a Path) -> Self {
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        let rows = lines
            .map(|l| {
                l.split(',')
                    .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
                    .collect()
            })
            .collect();
        Self { path, header, rows }
    }

    /// The index of the column `name`.
    fn col(&self, name: &str) -> Result<usize, String> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{}: no `{name}` column", self.path.display()))
    }
}

/// Draw `history` into `path` (PNG), titled `name`; `epochs` is the planned run length (the x
/// axis spans it, so the curves grow into the plot as the run goes).
pub fn draw_curves(
    history: &[EpochRecord],
    epochs: usize,
    name: &str,
    path: &Path,
) -> crate::error::Result<()> {
    let c = Curves::from_history(name, history);
    draw(&[c], epochs as f64, name, path).map_err(crate::error::Error::Plot)
}

/// [`draw_curves`] with the train loss and learning rate of every row of `steps` (a run's
/// `steps.csv`, `batches` per epoch) — the training loop's plot.
pub fn draw_curves_with_steps(
    history: &[EpochRecord],
    steps: &Path,
    batches: usize,
    epochs: usize,
    name: &str,
    path: &Path,
) -> crate::error::Result<()> {
    let c = Curves::from_history(name, history)
        .with_steps(steps, Some(batches))
        .map_err(crate::error::Error::Plot)?;
    draw(&[c], epochs as f64, name, path).map_err(crate::error::Error::Plot)
}

/// `statten plot`: overlay the runs in `dirs` (their `summary.csv`) into `out`.
pub fn plot_runs(dirs: &[PathBuf], out: &Path, title: Option<&str>) -> crate::error::Result<()> {
    plot_runs_text(dirs, out, title).map_err(crate::error::Error::Plot)
}

fn plot_runs_text(dirs: &[PathBuf], out: &Path, title: Option<&str>) -> Result<(), String> {
    let runs: Vec<Curves> = dirs
        .iter()
        .map(|d| Curves::from_run_dir(d))
        .collect::<Result<_, _>>()?;
    let epochs = runs
        .iter()
        .flat_map(|r| r.epoch.iter().copied())
        .fold(1.0, f64::max);
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let title = title.map_or_else(|| names.join(" vs "), str::to_string);
    draw(&runs, epochs, &title, out)
}

/// Colours: one per series of a single run, one per run when several are overlaid.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A panel: caption, y-axis title, curves, y range and legend position.
type Panel<'a> = (
    &'a str,
    &'a str,
    &'a [Line],
    (f64, f64),
    SeriesLabelPosition,
);

/// One curve of a panel.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
}

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err("the bundled font could not be loaded".into())
    }
}

/// The y range of `lines` with a margin (`lo`/`hi` clamp it, e.g. 0–100 %).
fn y_range(lines: &[Line], lo: f64, hi: f64) -> (f64, f64) {
    let vals = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (mut a, mut b) = vals.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if a > b {
        return (0.0, 1.0);
    }
    if b - a < 1e-12 {
        let pad = a.abs().max(1e-3) * 0.1;
        a -= pad;
        b += pad;
    }
    let pad = 0.06 * (b - a);
    ((a - pad).max(lo), (b + pad).min(hi))
}

fn draw(runs: &[Curves], epochs: f64, title: &str, path: &Path) -> Result<(), String> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| format!("{}: drawing the plot: {e}", path.display());
    let (loss, acc, lr) = panel_lines(runs);
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root
            .titled(title, (FAMILY, 24).into_font().color(&BLACK))
            .map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, 3));
        let x_max = epochs.max(2.0);
        // From 0 where steps are drawn (the first epoch's steps lie before 1).
        let x_min = if runs.iter().any(|r| !r.step_x.is_empty()) {
            0.0
        } else {
            1.0
        };
        let specs: [Panel; 3] = [
            (
                "loss",
                "loss",
                &loss,
                y_range(&loss, f64::MIN, f64::MAX),
                SeriesLabelPosition::UpperRight,
            ),
            (
                "accuracy",
                "accuracy (%)",
                &acc,
                y_range(&acc, 0.0, 100.0),
                SeriesLabelPosition::LowerRight,
            ),
            (
                "learning rate",
                "learning rate",
                &lr,
                y_range(&lr, 0.0, f64::MAX),
                SeriesLabelPosition::UpperRight,
            ),
        ];
        for (area, spec) in panels.iter().zip(specs) {
            draw_panel(area, spec, (x_min, x_max), &err)?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| err(&"buffer size"))?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The lines of the three panels (loss, accuracy, learning rate) of `runs`: one run in the
/// palette's colours, several in one colour each (train dashed, no top-5).
fn panel_lines(runs: &[Curves]) -> (Vec<Line>, Vec<Line>, Vec<Line>) {
    let single = runs.len() == 1;
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    let mut lr = Vec::new();
    for (k, r) in runs.iter().enumerate() {
        let (prefix, c) = if single {
            (String::new(), None)
        } else {
            (format!("{} ", r.name), Some(PALETTE[k % PALETTE.len()]))
        };
        let color = |i: usize| c.unwrap_or(PALETTE[i]);
        let steps = !r.step_x.is_empty();
        loss.push(Line {
            label: format!("{prefix}train"),
            points: if steps {
                r.step_points(&r.step_loss)
            } else {
                r.points(&r.train_loss)
            },
            color: color(0),
            dashed: !single,
        });
        loss.push(Line {
            label: format!("{prefix}eval"),
            points: r.points(&r.eval_loss),
            color: color(1),
            dashed: false,
        });
        if single {
            loss.push(Line {
                label: "EMA eval".into(),
                points: r.points(&r.ema_eval_loss),
                color: color(3),
                dashed: false,
            });
        }
        acc.push(Line {
            label: format!("{prefix}train top-1"),
            points: r.points(&r.train_top1),
            color: color(0),
            dashed: !single,
        });
        acc.push(Line {
            label: format!("{prefix}eval top-1"),
            points: r.points(&r.eval_top1),
            color: color(1),
            dashed: false,
        });
        // Overlaid, top-5 would double the lines of every run: single runs only.
        if single {
            acc.push(Line {
                label: "eval top-5".into(),
                points: r.points(&r.eval_top5),
                color: color(2),
                dashed: false,
            });
        }
        if single {
            acc.push(Line {
                label: "EMA eval top-1".into(),
                points: r.points(&r.ema_eval_top1),
                color: color(3),
                dashed: false,
            });
        }
        lr.push(Line {
            label: if single {
                "learning rate".into()
            } else {
                r.name.clone()
            },
            points: if steps {
                r.step_points(&r.step_lr)
            } else {
                r.points(&r.lr)
            },
            color: color(0),
            dashed: false,
        });
    }
    (loss, acc, lr)
}

/// One panel: axes with epoch ticks, the lines (points marked where sparse) and a legend.
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    (caption, y_desc, lines, (y0, y1), pos): Panel<'_>,
    (x_min, x_max): (f64, f64),
    err: &dyn Fn(&dyn std::fmt::Display) -> String,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(72)
        .build_cartesian_2d(x_min..x_max, y0..y1)
        .map_err(|e| err(&e))?;
    let sci = caption == "learning rate";
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .axis_desc_style((FAMILY, 15))
        .label_style((FAMILY, 13))
        .x_labels(((x_max - x_min) as usize + 1).clamp(2, 11))
        .y_labels(8)
        // Epochs are whole numbers: ticks between them get no label.
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            if sci {
                format!("{v:.1e}")
            } else if (y1 - y0) < 0.1 {
                format!("{v:.4}")
            } else if (y1 - y0) < 5.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(|e| err(&e))?;
    let mut labelled = false;
    for l in lines.iter().filter(|l| !l.points.is_empty()) {
        let style = l.color.stroke_width(2);
        let color = l.color;
        let series = if l.dashed {
            chart.draw_series(DashedLineSeries::new(l.points.iter().copied(), 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(l.points.iter().copied(), style))
        }
        .map_err(|e| err(&e))?;
        let dashed = l.dashed;
        series.label(l.label.clone()).legend(move |(x, y)| {
            let pts = if dashed {
                vec![(x, y), (x + 8, y)]
            } else {
                vec![(x, y), (x + 20, y)]
            };
            PathElement::new(pts, color.stroke_width(2))
        });
        labelled = true;
        // Sparse series (eval every N epochs, or a run's first epoch): mark the points.
        if l.points.len() <= 40 {
            chart
                .draw_series(l.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(pos)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, eval: bool) -> EpochRecord {
        let e = epoch as f64;
        EpochRecord {
            epoch,
            train_loss: 2.0 / (e + 1.0),
            train_top1: 50.0 + 5.0 * e,
            eval_loss: if eval { 1.8 / (e + 1.0) } else { f64::NAN },
            eval_top1: if eval { 55.0 + 5.0 * e } else { f64::NAN },
            eval_top5: if eval { 90.0 + e } else { f64::NAN },
            lr: 1e-3 * (1.0 - e / 10.0),
            images_per_s: 100.0,
            seconds: 1.0,
            finished_at: 0,
            ema_eval_loss: f64::NAN,
            ema_eval_top1: f64::NAN,
            ema_eval_top5: f64::NAN,
        }
    }

    /// Pixels of the PNG at `p` that are neither white nor grey (the curves' colours).
    fn coloured_pixels(p: &Path) -> usize {
        let img = image::open(p).unwrap().to_rgb8();
        img.pixels()
            .filter(|px| {
                let [r, g, b] = px.0;
                r.max(g).max(b) - r.min(g).min(b) > 60
            })
            .count()
    }

    #[test]
    fn curves_png_has_text_and_curves_and_skips_missing_evals() {
        let dir = std::env::temp_dir().join(format!("statten-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("curves.png");
        let h: Vec<EpochRecord> = (0..6).map(|e| rec(e, e % 2 == 1)).collect();
        draw_curves(&h, 10, "test run", &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (W, H));
        // Text and axes are dark pixels; curves are coloured ones.
        let dark = img
            .pixels()
            .filter(|px| px.0.iter().all(|&c| c < 80))
            .count();
        assert!(dark > 2000, "{dark} dark pixels: no axes or text drawn");
        assert!(coloured_pixels(&p) > 1500);
        // An empty history still draws the frame.
        draw_curves(&[], 10, "empty", &p).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn logged_steps_are_drawn_at_fractional_epochs() {
        let dir = std::env::temp_dir().join(format!("statten-plot-steps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rd = crate::rundir::RunDir::prepare(&dir, crate::rundir::Existing::Refuse).unwrap();
        rd.write_summary(&[rec(0, true)]).unwrap();
        let p = dir.join("curves.png");
        draw_curves(&[rec(0, true)], 10, "one epoch", &p).unwrap();
        let dots = coloured_pixels(&p);
        // One epoch of 10 batches, a row every 2: without the batches per epoch, the last
        // logged batch of the first epoch stands for them.
        let row = |step: u64, epoch, batch| crate::rundir::StepRecord {
            step,
            epoch,
            batch,
            loss: 3.0 - step as f64 * 0.1,
            lr: 1e-3,
            images_per_s: 10.0,
            time: 0,
        };
        let rows: Vec<_> = (1..=5).map(|k| row(2 * k, 0, 2 * k as usize)).collect();
        rd.append_steps(&rows).unwrap();
        let c = Curves::from_run_dir(&dir).unwrap();
        assert_eq!(c.step_x, vec![0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(c.step_loss[0], Some(2.8));
        draw_curves_with_steps(&[rec(0, true)], &rd.steps(), 10, 10, "one epoch", &p).unwrap();
        let lines = coloured_pixels(&p);
        assert!(
            lines > dots + 300,
            "{lines} coloured pixels with steps, {dots} without"
        );
        // Past the first epoch the rows give the batches per epoch exactly (12 = 1·10 + 2).
        rd.append_steps(&[row(12, 1, 2)]).unwrap();
        let c = Curves::from_run_dir(&dir).unwrap();
        assert_eq!(c.step_x.last(), Some(&1.2));
        // The run's own count wins.
        let c = Curves::default().with_steps(&rd.steps(), Some(4)).unwrap();
        assert_eq!(c.step_x[0], 0.5);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn runs_overlay_from_summary_csv() {
        let dir = std::env::temp_dir().join(format!("statten-plot-runs-{}", std::process::id()));
        let mut dirs = Vec::new();
        for (k, name) in ["statten", "sdsa"].iter().enumerate() {
            let d = dir.join(name);
            let rd = crate::rundir::RunDir::prepare(&d, crate::rundir::Existing::Refuse).unwrap();
            let h: Vec<EpochRecord> = (0..4 + k).map(|e| rec(e, e != 1)).collect();
            rd.write_summary(&h).unwrap();
            let c = Curves::from_run_dir(&d).unwrap();
            assert_eq!(c.epoch.len(), 4 + k);
            assert_eq!(c.eval_top1[1], None, "an empty cell is a missing value");
            assert_eq!(c.epoch[0], 1.0);
            dirs.push(d);
        }
        let out = dir.join("compare.png");
        plot_runs(&dirs, &out, None).unwrap();
        assert!(coloured_pixels(&out) > 1500);
        let e = plot_runs(&[dir.join("nope")], &out, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("summary.csv"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
