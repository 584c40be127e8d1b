//! CPU threads of the flex backend (and the data loader's rayon work): `--threads N`, or
//! rayon's usual `RAYON_NUM_THREADS`, or all cores.
//!
//! Results do not depend on the thread count for the work statten sends to flex: matrix
//! products split over output tiles (each dot product is summed in one order whatever the split),
//! the fused LIF splits over neurons, and BatchNorm and the other reductions statten uses are
//! per row. Two runs with one seed are bit-identical at any fixed thread count; the tests check
//! that, and that 1 and 2 threads give the same training metrics.

/// The machine's logical cores (`std::thread::available_parallelism`, 1 if unknown).
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Check a thread count: at least 1 and at most the machine's cores.
pub fn validate(n: usize) -> Result<usize, String> {
    let cores = available_cores();
    if n == 0 {
        return Err("--threads 0: give at least 1 thread".into());
    }
    if n > cores {
        return Err(format!(
            "--threads {n}: this machine has {cores} cores (more threads than cores only slow the \
             CPU backend down)"
        ));
    }
    Ok(n)
}

/// Size rayon's global pool: `threads` when given (validated), else `RAYON_NUM_THREADS` when
/// set, else one thread per core. Returns the pool's size. Must run before any tensor work;
/// a second call keeps the first pool (and says so when the counts differ).
pub fn configure(threads: Option<usize>) -> Result<usize, String> {
    let n = match threads {
        Some(n) => validate(n)?,
        None => match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) if !v.trim().is_empty() => {
                let n: usize = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("RAYON_NUM_THREADS=`{v}` is not a number of threads"))?;
                // rayon itself reads 0 as "all cores".
                if n == 0 {
                    available_cores()
                } else {
                    validate(n).map_err(|e| e.replace("--threads", "RAYON_NUM_THREADS="))?
                }
            }
            _ => available_cores(),
        },
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(n),
        Err(_) => {
            let current = rayon::current_num_threads();
            if current != n {
                return Err(format!(
                    "the thread pool already runs {current} threads; cannot switch to {n}"
                ));
            }
            Ok(current)
        }
    }
}

/// Keep freed memory in the process for reuse (glibc): no `mmap` per large tensor and no heap
/// trimming. A training step allocates and frees the same large buffers every iteration; with
/// glibc's defaults each one comes back from the kernel as fresh zeroed pages (page faults were a
/// third of the fused LIF's time). Call once at start-up, before any tensor work; elsewhere a
/// no-op. `STATTEN_SYSTEM_MALLOC=1` keeps glibc's defaults.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("STATTEN_SYSTEM_MALLOC").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_too_many_threads_are_errors() {
        assert!(validate(0).unwrap_err().contains("at least 1"));
        let too_many = available_cores() + 1;
        let e = validate(too_many).unwrap_err();
        assert!(e.contains("cores"), "{e}");
        assert_eq!(validate(1), Ok(1));
    }
}
