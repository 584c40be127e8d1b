//! SpikingJelly's event → frame integration (`spikingjelly/datasets/utils.py`:
//! `cal_fixed_frames_number_segment_index`, `integrate_events_segment_to_frame`,
//! `integrate_events_by_fixed_frames_number`), reproduced exactly.

use std::path::Path;

use super::Events;
use crate::error::{DataError, Result};

/// How events are split into `T` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    /// Equal event counts per frame; the last frame takes the remainder.
    Number,
    /// Equal time windows of `(t[N−1] − t[0]) // T` µs; the last frame runs to the end.
    Time,
}

impl std::fmt::Display for SplitBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitBy::Number => "number",
            SplitBy::Time => "time",
        })
    }
}

impl std::str::FromStr for SplitBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "number" => Ok(Self::Number),
            "time" => Ok(Self::Time),
            o => Err(format!("unknown split_by `{o}` (expected number or time)")),
        }
    }
}

/// What to do with an empty time window under `split_by = time`.
///
/// SpikingJelly raises `IndexError` there (it indexes the first event of an empty selection).
/// The default, [`EmptyWindow::Error`], mimics it with an error naming the file and window, so no
/// frame set is produced that SpikingJelly could not have produced. [`EmptyWindow::Allow`] gives
/// an all-zero frame for that window instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptyWindow {
    /// Fail like SpikingJelly.
    #[default]
    Error,
    /// Produce an empty frame.
    Allow,
}

/// Index ranges `[j_l[i], j_r[i])` of the events of each frame.
///
/// `path` only names the file in errors.
pub fn segment_indices(
    t: &[u64],
    split_by: SplitBy,
    frames: usize,
    empty: EmptyWindow,
    path: &Path,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = t.len();
    if n == 0 {
        return Err(DataError::new(
            path,
            "no events: cannot integrate an empty recording into frames",
        ));
    }
    if frames == 0 {
        return Err(DataError::new(
            path,
            "the number of frames (T) must be at least 1",
        ));
    }
    let mut j_l = vec![0usize; frames];
    let mut j_r = vec![0usize; frames];
    match split_by {
        SplitBy::Number => {
            let di = n / frames;
            for i in 0..frames {
                j_l[i] = i * di;
                j_r[i] = (i + 1) * di;
            }
        }
        SplitBy::Time => {
            // Integer arithmetic as numpy's on the int timestamps.
            let t0 = t[0] as i64;
            let dt = (t[n - 1] as i64 - t0).div_euclid(frames as i64);
            for i in 0..frames {
                let t_l = dt * i as i64 + t0;
                let t_r = t_l + dt;
                // mask = (t >= t_l) & (t < t_r); first and last masked index.
                let mut first = None;
                let mut last = 0;
                for (k, &tk) in t.iter().enumerate() {
                    let tk = tk as i64;
                    if tk >= t_l && tk < t_r {
                        if first.is_none() {
                            first = Some(k);
                        }
                        last = k;
                    }
                }
                match first {
                    Some(f) => {
                        j_l[i] = f;
                        j_r[i] = last + 1;
                    }
                    None => match empty {
                        EmptyWindow::Error => {
                            return Err(DataError::new(
                                path,
                                format!(
                                    "split_by=time: window {i} of {frames} ([{t_l}, {t_r}) µs) holds no \
                                     events (SpikingJelly raises IndexError here); use fewer frames, \
                                     split_by=number, or allow empty windows"
                                ),
                            ))
                        }
                        EmptyWindow::Allow => {
                            let at = t.iter().position(|&tk| tk as i64 >= t_l).unwrap_or(n);
                            j_l[i] = at;
                            j_r[i] = at;
                        }
                    },
                }
            }
        }
    }
    j_r[frames - 1] = n;
    Ok((j_l, j_r))
}

/// Frames `[T, 2, H, W]` of event counts, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    /// Number of frames.
    pub t: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `T·2·H·W` values.
    pub data: Vec<f32>,
}

impl Frames {
    /// Shape `[T, 2, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.t, 2, self.h, self.w]
    }

    /// The planes `[2·T]` of `H·W` values each.
    pub fn planes(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.h * self.w)
    }

    /// Little-endian f32 bytes (as written by `numpy.float32.tobytes()`).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Integrate `events` into `T` frames of `2×H×W` counts (channel 0: `p == 0`, channel 1:
/// `p != 0`, pixel `[c, y, x]`, duplicates counted) exactly as SpikingJelly.
///
/// Events outside `H×W` are an error naming the file (SpikingJelly would fail on the reshape).
pub fn integrate(
    events: &Events,
    split_by: SplitBy,
    frames: usize,
    h: usize,
    w: usize,
    empty: EmptyWindow,
    path: &Path,
) -> Result<Frames> {
    let (j_l, j_r) = segment_indices(&events.t, split_by, frames, empty, path)?;
    if let Some(i) =
        (0..events.len()).find(|&i| events.x[i] as usize >= w || events.y[i] as usize >= h)
    {
        return Err(DataError::new(
            path,
            format!(
                "event {i} at (x={}, y={}) lies outside the {h}×{w} sensor",
                events.x[i], events.y[i]
            ),
        ));
    }
    let plane = h * w;
    let mut data = vec![0f32; frames * 2 * plane];
    for f in 0..frames {
        let base = f * 2 * plane;
        for i in j_l[f]..j_r[f] {
            let c = (events.p[i] != 0) as usize;
            data[base + c * plane + events.y[i] as usize * w + events.x[i] as usize] += 1.0;
        }
    }
    Ok(Frames {
        t: frames,
        h,
        w,
        data,
    })
}
