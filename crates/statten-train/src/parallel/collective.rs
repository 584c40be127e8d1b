//! Data parallelism across processes: the collective operations a training run needs, and
//! (with the `mpi` cargo feature) their MPI implementation.
//!
//! A run over `R` ranks is the same optimization as one process: every rank draws the same
//! global batches (the sampler does not depend on `R`), trains on its contiguous share of each
//! ([`super::replicas::batch_plan`] over `R × devices` parts), and the gradients (each share's
//! loss already weighted by its size) are summed over ranks in one flat buffer before the
//! optimizer step, so every rank takes the same step. BatchNorm statistics stay per rank, and
//! rank 0's are given to every rank before evaluation, as DDP's buffer broadcast. Evaluation is
//! sharded by batch and its sums reduced. Rank 0 alone writes the run directory.

/// The collective operations of a data-parallel run. Calls are made from one thread per rank,
/// in the same order on every rank.
pub trait Collective: std::fmt::Debug {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Rank among the processes of this machine (GPU selection).
    fn local_rank(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Rank 0's values to every rank, in place.
    fn broadcast_f32(&self, buf: &mut [f32]);
    /// Rank 0's values to every rank, in place.
    fn broadcast_u64(&self, buf: &mut [u64]);
    /// End every rank's process now (a rank that cannot go on must not leave the others waiting
    /// in a collective).
    fn abort(&self, code: i32) -> !;
}

/// FNV-1a of `text`: the resolved config's fingerprint, compared across ranks.
pub fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, Slurm's `srun`)
/// as one of several ranks, and how many, from the launcher's environment.
pub fn launcher_world_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        // Slurm's srun sets the step's task count; an sbatch script's own shell (SLURM_NTASKS
        // without a step) is one process, not a rank of several.
        "SLURM_STEP_NUM_TASKS",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
    .filter(|&n| n > 1)
}

/// The local rank from the launcher's environment (Open MPI, MPICH/PMI, Slurm).
pub fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
}

/// The MPI world when this process is one of several ranks (built with the `mpi` feature);
/// `None` for a process started alone. Without the feature, being started by an MPI launcher
/// as one of several ranks is an error: every rank would train alone.
pub fn mpi_world() -> crate::error::Result<Option<std::rc::Rc<dyn Collective>>> {
    #[cfg(feature = "mpi")]
    {
        let w = MpiWorld::init()?;
        if w.size() > 1 {
            return Ok(Some(std::rc::Rc::new(w)));
        }
        Ok(None)
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = launcher_world_size() {
            return Err(crate::error::Error::Distributed(format!(
                "started as one of {n} MPI ranks, but this statten was built without the `mpi` \
                 cargo feature, so every rank would train alone: build it with `cargo build \
                 --release --features mpi` (needs an MPI installation, e.g. Debian's \
                 libopenmpi-dev and libclang-dev)"
            )));
        }
        Ok(None)
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::MpiWorld;

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    /// `MPI_COMM_WORLD`. A binary started without a launcher is a world of one.
    pub struct MpiWorld {
        // Finalizes MPI when dropped (after the world).
        _universe: mpi::environment::Universe,
        world: SimpleCommunicator,
    }

    impl std::fmt::Debug for MpiWorld {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "MpiWorld(rank {} of {})",
                self.world.rank(),
                self.world.size()
            )
        }
    }

    impl MpiWorld {
        /// Initialise MPI (once per process).
        pub fn init() -> crate::error::Result<Self> {
            let universe = mpi::initialize().ok_or_else(|| {
                crate::error::Error::Distributed(
                    "MPI could not be initialised (already initialised?)".to_string(),
                )
            })?;
            let world = universe.world();
            Ok(Self {
                _universe: universe,
                world,
            })
        }
    }

    impl super::Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn local_rank(&self) -> usize {
            super::launcher_local_rank().unwrap_or(self.rank())
        }

        fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }

        fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }

        fn broadcast_f32(&self, buf: &mut [f32]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }

        fn broadcast_u64(&self, buf: &mut [u64]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }

        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

/// A world of `n` ranks inside one process, one thread per rank, for tests of the
/// data-parallel logic without MPI. Collectives block until every rank has called them.
#[derive(Debug)]
pub struct ThreadWorld {
    rank: usize,
    shared: std::sync::Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    n: usize,
    state: std::sync::Mutex<Round>,
    cv: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Round {
    /// Contributions of the current round, by rank.
    parts: Vec<Option<Vec<f64>>>,
    /// The finished round's result, and how many ranks still have to read it.
    result: Option<(Vec<f64>, usize)>,
    generation: u64,
}

impl ThreadWorld {
    /// `n` connected ranks.
    pub fn new(n: usize) -> Vec<ThreadWorld> {
        let shared = std::sync::Arc::new(Shared {
            n,
            state: std::sync::Mutex::new(Round {
                parts: vec![None; n],
                ..Default::default()
            }),
            cv: std::sync::Condvar::new(),
        });
        (0..n)
            .map(|rank| ThreadWorld {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank gives `mine`; every rank gets `combine(parts in rank order)`.
    fn exchange(&self, mine: Vec<f64>, combine: fn(&[Vec<f64>]) -> Vec<f64>) -> Vec<f64> {
        let s = &self.shared;
        let mut st = s.state.lock().unwrap();
        // Wait until the previous round's result has been read by everyone.
        while st.result.is_some() {
            st = s.cv.wait(st).unwrap();
        }
        let gen = st.generation;
        st.parts[self.rank] = Some(mine);
        if st.parts.iter().all(|p| p.is_some()) {
            let parts: Vec<Vec<f64>> = st.parts.iter_mut().map(|p| p.take().unwrap()).collect();
            st.result = Some((combine(&parts), s.n));
            st.generation += 1;
            s.cv.notify_all();
        } else {
            while st.generation == gen {
                st = s.cv.wait(st).unwrap();
            }
        }
        let (out, left) = st.result.as_mut().unwrap();
        let out_v = out.clone();
        *left -= 1;
        if *left == 0 {
            st.result = None;
            s.cv.notify_all();
        }
        out_v
    }
}

fn sum_parts(parts: &[Vec<f64>]) -> Vec<f64> {
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

fn first_part(parts: &[Vec<f64>]) -> Vec<f64> {
    parts[0].clone()
}

impl Collective for ThreadWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.n
    }

    fn local_rank(&self) -> usize {
        self.rank
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        // f32 → f64 is exact; the sum is taken in f32, rank by rank, as MPI sums f32 values.
        fn sum_f32(parts: &[Vec<f64>]) -> Vec<f64> {
            let mut out: Vec<f32> = parts[0].iter().map(|&v| v as f32).collect();
            for p in &parts[1..] {
                for (o, &v) in out.iter_mut().zip(p) {
                    *o += v as f32;
                }
            }
            out.into_iter().map(f64::from).collect()
        }
        let out = self.exchange(buf.iter().map(|&v| v as f64).collect(), sum_f32);
        for (b, v) in buf.iter_mut().zip(out) {
            *b = v as f32;
        }
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let out = self.exchange(buf.to_vec(), sum_parts);
        buf.copy_from_slice(&out);
    }

    fn broadcast_f32(&self, buf: &mut [f32]) {
        let out = self.exchange(buf.iter().map(|&v| v as f64).collect(), first_part);
        for (b, v) in buf.iter_mut().zip(out) {
            *b = v as f32;
        }
    }

    fn broadcast_u64(&self, buf: &mut [u64]) {
        let mine: Vec<f64> = buf.iter().map(|&v| f64::from_bits(v)).collect();
        let out = self.exchange(mine, first_part);
        for (b, v) in buf.iter_mut().zip(out) {
            *b = v.to_bits();
        }
    }

    fn abort(&self, code: i32) -> ! {
        eprintln!("rank {} aborts the run (status {code})", self.rank);
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_world_sums_and_broadcasts_in_rank_order() {
        let worlds = ThreadWorld::new(3);
        let out: Vec<(Vec<f32>, Vec<f64>, Vec<u64>)> = std::thread::scope(|s| {
            let hs: Vec<_> = worlds
                .iter()
                .map(|w| {
                    s.spawn(move || {
                        let r = w.rank();
                        let mut a = vec![r as f32 + 0.5, 1.0];
                        w.all_reduce_sum_f32(&mut a);
                        let mut b = vec![r as f64; 2];
                        for _ in 0..5 {
                            w.all_reduce_sum_f64(&mut b);
                        }
                        let mut c = vec![10 + r as u64];
                        w.broadcast_u64(&mut c);
                        (a, b, c)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b, c) in out {
            assert_eq!(a, vec![4.5, 3.0]);
            // 0+1+2 = 3, then ×3 four more times.
            assert_eq!(b, vec![243.0, 243.0]);
            assert_eq!(c, vec![10]);
        }
        assert_ne!(fingerprint("a = 1"), fingerprint("a = 2"));
    }
}
