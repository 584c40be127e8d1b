//! Kernel profiles of a training step on a CubeCL device (`statten bench --train PRESET
//! --device wgpu --profile`): CubeCL's profiling log (every kernel launch, timed) read back
//! between two points of the run, the launches grouped by kind.
//!
//! CubeCL reads its logging settings once, when the first device starts: [`enable`] must run
//! before any wgpu device is used. Each launch is then timed on its own (the queue waits for
//! it), so a profiled step is slower than a plain one; the launch counts are exact, and on a
//! real GPU the times say where a step's time goes. On a software Vulkan driver the times are
//! the CPU's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a kernel does, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelKind {
    /// Matrix products (`Matmul…`).
    Matmul,
    /// Direct convolutions and pools (`Conv…`, `Pool…`).
    Convolution,
    /// Burn's fused element-wise kernels (`ElemwiseFuse…`).
    FusedElementwise,
    /// Element-wise kernels outside fusion (binary, scalar, unary operations).
    Elementwise,
    /// Reductions (`Reduce…`, `SharedSum…`).
    Reduction,
    /// Copies and layout changes (`Copy…`, slices).
    Copy,
    /// Fills (`Full…`).
    Fill,
    /// Random numbers (`Prng…`).
    Random,
    /// statten's own kernels (the fused LIF).
    Statten,
    /// Anything else.
    Other,
}

impl KernelKind {
    /// The kind of the kernel named `name` (as CubeCL logs it).
    pub fn of(name: &str) -> Self {
        let has = |p: &str| name.contains(p);
        if has("Lif") {
            Self::Statten
        } else if has("Matmul") {
            Self::Matmul
        } else if has("Conv") || has("Pool") {
            Self::Convolution
        } else if has("ElemwiseFuse") {
            Self::FusedElementwise
        } else if has("Reduce") || has("SharedSum") {
            Self::Reduction
        } else if has("Copy") || has("Slice") {
            Self::Copy
        } else if has("Full") || has("Fill") {
            Self::Fill
        } else if has("Prng") || has("Random") {
            Self::Random
        } else if has("Binop") || has("Unary") || has("Op_") || name.starts_with("AddOp") {
            Self::Elementwise
        } else {
            Self::Other
        }
    }

    /// A short name for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Matmul => "matmul",
            Self::Convolution => "convolution/pool",
            Self::FusedElementwise => "fused element-wise",
            Self::Elementwise => "element-wise (unfused)",
            Self::Reduction => "reduction",
            Self::Copy => "copy/layout",
            Self::Fill => "fill",
            Self::Random => "random",
            Self::Statten => "statten (LIF)",
            Self::Other => "other",
        }
    }
}

/// One logged launch: the kernel's name and, when measured, its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The kernel (CubeCL's name, its hash suffix included).
    pub name: String,
    /// Its time on the device.
    pub time: Option<Duration>,
}

/// CubeCL's profiling log of this process.
#[derive(Debug, Clone)]
pub struct KernelLog {
    path: PathBuf,
}

/// Turn CubeCL's profiling log on, into a file in the temp folder. Must run before the first
/// CubeCL device is used (CubeCL reads the settings once).
pub fn enable() -> KernelLog {
    let path = std::env::temp_dir().join(format!("statten-kernels-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // Read by CubeCL when its first runtime starts; nothing has started yet.
    std::env::set_var("CUBECL_DEBUG_LOG", &path);
    std::env::set_var("CUBECL_DEBUG_OPTION", "profile");
    KernelLog { path }
}

impl KernelLog {
    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the log stops growing (CubeCL writes it from a background task) and returns
    /// its length: a point of the run to read from.
    pub fn settle(&self) -> u64 {
        let size = || std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let start = Instant::now();
        let mut last = size();
        let mut still = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            if now != last {
                last = now;
                still = Instant::now();
            } else if still.elapsed() >= Duration::from_millis(500) {
                break;
            }
        }
        last
    }

    /// The launches logged between two [`settle`](Self::settle) points.
    pub fn launches(&self, from: u64, to: u64) -> Result<Vec<Launch>, String> {
        let bytes =
            std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let part = bytes
            .get(from as usize..(to as usize).min(bytes.len()))
            .unwrap_or(&[]);
        Ok(parse_launches(&String::from_utf8_lossy(part)))
    }
}

/// The launch lines of a CubeCL profiling log: `| <time> | <name>` (`not measured` for a time
/// it could not take); other lines (compilation, autotune) are skipped.
pub fn parse_launches(text: &str) -> Vec<Launch> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("| ")?;
            let (time, name) = rest.split_once(" | ")?;
            Some(Launch {
                name: name.trim().to_string(),
                time: parse_duration(time.trim()),
            })
        })
        .collect()
}

/// A Rust `Debug` duration (`12.5ms`, `87.37µs`, `1.2s`, `900ns`).
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("µs") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix("ns") {
        (v, 1e-9)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

/// Launches and time of a group of kernels, per step.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The group (a kind, or a kernel's name).
    pub name: String,
    /// Launches per step.
    pub launches: f64,
    /// Device time per step (measured launches only).
    pub time: Duration,
}

/// A step's kernels: per kind, and the kernels that take the most time.
#[derive(Debug, Clone)]
pub struct StepProfile {
    /// Steps the launches were counted over.
    pub steps: usize,
    /// Launches per step.
    pub launches: f64,
    /// Device time per step (the sum of the measured launches).
    pub time: Duration,
    /// Per kind, most launches first.
    pub by_kind: Vec<Group>,
    /// Per kernel (name without its hash), most time first.
    pub top: Vec<Group>,
}

impl StepProfile {
    /// The profile of `steps` steps' launches.
    pub fn of(launches: &[Launch], steps: usize) -> Self {
        use std::collections::HashMap;
        let n = steps.max(1) as f64;
        let mut kinds: HashMap<KernelKind, (usize, Duration)> = HashMap::new();
        let mut names: HashMap<String, (usize, Duration)> = HashMap::new();
        for l in launches {
            let t = l.time.unwrap_or_default();
            let k = kinds.entry(KernelKind::of(&l.name)).or_default();
            k.0 += 1;
            k.1 += t;
            let e = names.entry(base_name(&l.name)).or_default();
            e.0 += 1;
            e.1 += t;
        }
        let group = |name: String, (c, t): (usize, Duration)| Group {
            name,
            launches: c as f64 / n,
            time: t.div_f64(n),
        };
        let mut by_kind: Vec<Group> = kinds
            .into_iter()
            .map(|(k, v)| group(k.label().to_string(), v))
            .collect();
        by_kind.sort_by(|a, b| b.launches.total_cmp(&a.launches).then(a.name.cmp(&b.name)));
        let mut top: Vec<Group> = names.into_iter().map(|(k, v)| group(k, v)).collect();
        top.sort_by(|a, b| b.time.cmp(&a.time).then(b.launches.total_cmp(&a.launches)));
        top.truncate(10);
        Self {
            steps,
            launches: launches.len() as f64 / n,
            time: launches
                .iter()
                .map(|l| l.time.unwrap_or_default())
                .sum::<Duration>()
                .div_f64(n),
            by_kind,
            top,
        }
    }

    /// The profile as text: launches and time per step, per kind, then the ten kernels that
    /// take the most time.
    pub fn table(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut s = format!(
            "kernel launches per step: {:.0} (over {} steps), device time {:.2} ms per step\n",
            self.launches,
            self.steps,
            ms(self.time)
        );
        s += &format!("  {:<24} {:>10} {:>12}\n", "kind", "launches", "ms/step");
        for g in &self.by_kind {
            s += &format!(
                "  {:<24} {:>10.1} {:>12.3}\n",
                g.name,
                g.launches,
                ms(g.time)
            );
        }
        s += "  the 10 kernels that take the most time:\n";
        for g in &self.top {
            s += &format!(
                "  {:<48} {:>8.1} {:>12.3}\n",
                g.name,
                g.launches,
                ms(g.time)
            );
        }
        s
    }
}

/// A kernel's name for tables: its first part without CubeCL's hash suffix, and the families
/// (the algorithm) of its other parts (`MatmulEntry | TensorArgs | … | SimpleMatmulFamily | …`
/// → `MatmulEntry (SimpleMatmulFamily)`; `ElemwiseFuse_9e7a69eb` → `ElemwiseFuse`).
fn base_name(name: &str) -> String {
    let unhash = |part: &str| match part.rsplit_once('_') {
        Some((head, hash)) if hash.len() >= 6 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_string()
        }
        _ => part.to_string(),
    };
    let mut parts = name.split(" | ").map(|p| unhash(p.trim()));
    let head = parts.next().unwrap_or_default();
    let families: Vec<String> = parts.filter(|p| p.ends_with("Family")).collect();
    if families.is_empty() {
        head
    } else {
        format!("{head} ({})", families.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_and_group_by_kind() {
        let log = "\
| 39.830388ms | ElemwiseFuse_9e7a69eb
| 21.746271ms | PrngKernel | UniformFamily_4f16c805
compiled kernel source …
| 87.37µs    | MatmulEntry_0a771bc4
| not measured | CopyKernelPack_11223344
| 1.5s       | LifForwardKernel_aabbccdd
| 900ns      | ReduceKernel_12345678
";
        let l = parse_launches(log);
        assert_eq!(l.len(), 6);
        assert_eq!(l[0].time, Some(Duration::from_secs_f64(0.039830388)));
        assert_eq!(l[1].name, "PrngKernel | UniformFamily_4f16c805");
        assert_eq!(l[3].time, None);
        let kinds: Vec<KernelKind> = l.iter().map(|l| KernelKind::of(&l.name)).collect();
        use KernelKind::*;
        assert_eq!(
            kinds,
            vec![FusedElementwise, Random, Matmul, Copy, Statten, Reduction]
        );
        let p = StepProfile::of(&l, 2);
        assert_eq!(p.launches, 3.0);
        assert_eq!(p.top[0].name, "LifForwardKernel");
        assert!(p.table().contains("kernel launches per step: 3"));
        assert_eq!(
            base_name("PrngKernel | NormalFamily_ebf695c2"),
            "PrngKernel (NormalFamily)"
        );
        assert_eq!(
            base_name("MatmulEntry | TensorArgs | __Lhs | SimpleMatmulFamily | UnitPartitioner"),
            "MatmulEntry (SimpleMatmulFamily)"
        );
        assert_eq!(base_name("ReduceKernel | TensorArgs"), "ReduceKernel");
    }
}
