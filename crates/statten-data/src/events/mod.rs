//! Event cameras: readers for the distributed formats and SpikingJelly's frame integration.
//!
//! - [`aedat`]: jAER AEDAT 2.0 (CIFAR10-DVS, DVS128), with SpikingJelly's coordinate mapping.
//! - [`atis`]: the 40-bit ATIS format of N-Caltech101 and N-MNIST.
//! - [`frames`]: `split_by = number | time` integration into `[T, 2, H, W]` event counts.
//! - [`resize`]: the reference's frame resizes (bilinear without antialias, nearest).
//! - [`augment`]: the reference's event-frame augmentations (roll, rotation, shear, flip).

pub mod aedat;
pub mod atis;
pub mod augment;
pub mod frames;
pub mod resize;

/// Events as parallel arrays, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// Timestamps in µs.
    pub t: Vec<u64>,
    /// Column.
    pub x: Vec<u16>,
    /// Row.
    pub y: Vec<u16>,
    /// Polarity: 0 = OFF, 1 = ON.
    pub p: Vec<u8>,
}

impl Events {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// An empty set with room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            t: Vec::with_capacity(n),
            x: Vec::with_capacity(n),
            y: Vec::with_capacity(n),
            p: Vec::with_capacity(n),
        }
    }

    /// Append one event.
    pub fn push(&mut self, t: u64, x: u16, y: u16, p: u8) {
        self.t.push(t);
        self.x.push(x);
        self.y.push(y);
        self.p.push(p);
    }
}

/// An event file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// jAER AEDAT 2.0 from a DVS128 (CIFAR10-DVS), 128×128.
    Aedat2,
    /// 40-bit ATIS events (N-Caltech101 180×240, N-MNIST 34×34).
    Ncaltech,
}

impl EventFormat {
    /// Read a file of this format.
    pub fn read(&self, path: &std::path::Path) -> crate::Result<Events> {
        match self {
            EventFormat::Aedat2 => aedat::read_aedat2(path),
            EventFormat::Ncaltech => atis::read_atis_bin(path),
        }
    }

    /// Sensor size `(H, W)` as SpikingJelly's `get_H_W`.
    pub fn sensor_hw(&self) -> (usize, usize) {
        match self {
            EventFormat::Aedat2 => (128, 128),
            EventFormat::Ncaltech => (180, 240),
        }
    }
}

impl std::str::FromStr for EventFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "aedat2" | "aedat" | "cifar10-dvs" => Ok(Self::Aedat2),
            "ncaltech" | "ncaltech101" | "atis" | "nmnist" => Ok(Self::Ncaltech),
            other => Err(format!(
                "unknown event format `{other}` (expected aedat2 or ncaltech)"
            )),
        }
    }
}
