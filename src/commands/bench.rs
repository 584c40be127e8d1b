//! `statten bench`: the core workloads, a preset's training throughput, or the all-reduce.

use clap::ValueEnum;
use statten::device::DeviceName;
use statten_core::conv::{with_algorithm, ConvAlgorithm};
use statten_core::precision::Precision;
use statten_train::device::DEVICE_FAILURE_CAUSE;
use statten_train::parallel::mpi_world;

use super::{conv_note, listed};

// `statten bench`'s arguments (its help text is the doc comment of `Command::Bench`).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Devices, comma-separated (cpu, flex, ndarray, wgpu).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    pub device: Vec<DeviceName>,
    /// Timed iterations per workload (the median is reported; `--train` also reports the fastest).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: u64,
    /// Untimed warm-up iterations (shader compilation, autotuning).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Batch size of the training-step workloads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_enum,
        default_value = "lif,lif-composite,core,block,train",
        value_delimiter = ','
    )]
    pub only: Vec<Workload>,
    /// Training-throughput mode: one training step of this preset (see `statten model
    /// presets`) at --batch, repeated --iters times; prints images/s and peak memory.
    #[arg(long, value_name = "PRESET")]
    pub train: Option<String>,
    /// With --train: override a model key of the preset, e.g. `--set model.chunk_size=2`.
    #[arg(long = "set", value_name = "model.KEY=VALUE")]
    pub sets: Vec<String>,
    /// All-reduce mode (under `mpirun`, built with `--features mpi`): time the per-step
    /// gradient all-reduce of this preset's parameters (one flat f32 buffer, as `train`
    /// does) over the ranks; prints the bytes and the median time.
    #[arg(long, value_name = "PRESET", conflicts_with = "train")]
    pub allreduce: Option<String>,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The CPU convolutions' kernels: exact (default; reference-exact), winograd (faster 3x3
    /// gradients, not reference-exact) or float64 (every sum in float64; slow).
    #[arg(long, value_parser = listed::<ConvAlgorithm>(&ConvAlgorithm::NAMES))]
    pub conv_algorithm: Option<ConvAlgorithm>,
    /// With --train: the matrix products' precision, f32 (default), f16 (with loss scaling, as
    /// `train.precision = "f16"`) or bf16.
    #[arg(long, value_parser = listed::<Precision>(&Precision::NAMES), default_value = "f32")]
    pub precision: Precision,
    /// With --train on wgpu: the step's kernels from CubeCL's profiling log, launches per step
    /// grouped by kind (matmul, convolution, fused element-wise, reductions, copies, fills,
    /// random, statten's own) and the ten that take the most time. Each launch is timed on its
    /// own, so the step runs slower than unprofiled; at least 2 warm-up steps (autotuning).
    #[arg(long, requires = "train")]
    pub profile: bool,
}

/// `bench --only` workloads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Fused LIF forward + backward.
    Lif,
    /// The composite (per-step autodiff) LIF.
    LifComposite,
    /// The LIF over all steps at once.
    LifBatched,
    /// The attention core.
    Core,
    /// One STAtten block.
    Block,
    /// One CIFAR-10 2-512 training step.
    Train,
}

/// Median wall time of `iters` runs of `it` after `warmup` untimed ones; the first error the
/// device reports ends the measurement.
fn median_ms(it: &mut statten::bench::Iteration, warmup: u64, iters: u64) -> Result<f64, String> {
    step_times_ms(it, warmup, iters).map(|(median, _)| median)
}

/// `(median, fastest)` of `iters` timed runs after `warmup` untimed ones, in ms.
fn step_times_ms(
    it: &mut statten::bench::Iteration,
    warmup: u64,
    iters: u64,
) -> Result<(f64, f64), String> {
    for _ in 0..warmup {
        it()?;
    }
    let mut times = Vec::with_capacity(iters as usize);
    for _ in 0..iters.max(1) {
        let t0 = std::time::Instant::now();
        std::hint::black_box(it()?);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times[0]))
}

fn run_bench(
    devices: &[DeviceName],
    iters: u64,
    warmup: u64,
    batch: usize,
    only: &[Workload],
) -> Result<(), String> {
    use statten::bench::{self, LifForm};
    println!(
        "threads {} (CPU backends), conv {} (flex)\n{:<28} {:<8} {:>12} {:>12}",
        rayon::current_num_threads(),
        statten_core::conv::algorithm::current(),
        "workload",
        "device",
        "median ms",
        "images/s"
    );
    for dev_name in devices {
        let dev = dev_name.device();
        let mut workloads: Vec<(String, Option<usize>, bench::Iteration)> = Vec::new();
        let want = |k: Workload| only.contains(&k);
        if want(Workload::Lif) {
            let form = if dev_name.has_fused_lif() {
                LifForm::Fused
            } else {
                LifForm::PerStep
            };
            workloads.push(("lif_fwd_bwd".into(), None, bench::lif(&dev, form)));
        }
        if want(Workload::LifComposite) {
            workloads.push((
                "lif_fwd_bwd_composite".into(),
                None,
                bench::lif(&dev, LifForm::PerStep),
            ));
        }
        if want(Workload::LifBatched) {
            workloads.push((
                "lif_fwd_bwd_batched".into(),
                None,
                bench::lif(&dev, LifForm::Batched),
            ));
        }
        if want(Workload::Core) {
            workloads.push((
                "attention_core_fwd_bwd".into(),
                None,
                bench::attention_core(&dev),
            ));
        }
        if want(Workload::Block) {
            workloads.push((
                "statten_block_fwd_bwd".into(),
                None,
                bench::statten_block(&dev),
            ));
        }
        if want(Workload::Train) {
            workloads.push((
                format!("train_step_2_512_b{batch}"),
                Some(batch),
                bench::train_step(&dev, batch),
            ));
        }
        for (name, images, mut it) in workloads {
            let med = median_ms(&mut it, warmup, iters).map_err(|e| {
                format!("{name} on {dev_name} failed on the device: {e}\n{DEVICE_FAILURE_CAUSE}: try a smaller --batch")
            })?;
            let ips = images.map_or("-".into(), |b| format!("{:.1}", b as f64 / med * 1e3));
            println!("{name:<28} {dev_name:<8} {med:>12.1} {ips:>12}");
        }
    }
    Ok(())
}

/// The error of a training step the device could not run.
fn step_failed(preset: &str, batch: usize, dev_name: &DeviceName, e: &str) -> String {
    format!(
        "train {preset} batch {batch} on {dev_name}: the step failed on the device: {e}\n\
         {DEVICE_FAILURE_CAUSE}: try a smaller --batch"
    )
}

fn run_bench_train(a: &BenchArgs, preset: &str) -> Result<(), String> {
    let (precision, devices, sets) = (a.precision, &a.device[..], &a.sets[..]);
    let (iters, warmup, batch) = (a.iters, a.warmup, a.batch as usize);
    let cfg = statten_train::config::model_with_sets(preset, sets)
        .map_err(|e| format!("--train: {e}"))?;
    for dev_name in devices {
        let dev = dev_name.device();
        statten_core::precision::check_support(precision, &dev)
            .map_err(|why| format!("--precision {precision}: device {dev_name} cannot: {why}"))?;
        let (mut it, rate) = statten::bench::train_step_with_rate(&dev, &cfg, batch, precision);
        let (med, min) = step_times_ms(&mut it, warmup, iters)
            .map_err(|e| step_failed(preset, batch, dev_name, &e))?;
        let memory = match statten::bench::device_reserved_bytes(&dev) {
            Some(b) => format!("device pool {:.2} GiB", b as f64 / (1u64 << 30) as f64),
            None => match statten::bench::peak_rss_bytes() {
                Some(b) => format!("peak RSS {:.2} GiB", b as f64 / (1u64 << 30) as f64),
                None => "memory unknown".into(),
            },
        };
        let overrides = if sets.is_empty() {
            String::new()
        } else {
            format!(" [{}]", sets.join(", "))
        };
        println!(
            "train {preset}{overrides} T={} batch {batch} {precision} on {dev_name} ({} CPU threads{}): \
             {med:.1} ms/step (min {min:.1}), {:.1} images/s, {memory}, mean firing rate {:.3}",
            cfg.time_steps,
            rayon::current_num_threads(),
            conv_note(dev_name),
            batch as f64 / med * 1e3,
            rate.get(),
        );
    }
    Ok(())
}

/// `bench --train PRESET --profile`: the kernels of the preset's training step on a CubeCL
/// device, from CubeCL's profiling log between the warm-up and the end of the timed steps.
fn run_bench_profile(a: &BenchArgs, preset: &str) -> Result<(), String> {
    let (precision, devices, sets) = (a.precision, &a.device[..], &a.sets[..]);
    let (iters, warmup, batch) = (a.iters, a.warmup, a.batch as usize);
    let [dev_name] = devices else {
        return Err("--profile takes one device (--device wgpu)".into());
    };
    if !dev_name.is_cube() {
        return Err(format!(
            "--profile reads CubeCL's kernel log: it needs --device wgpu, not {dev_name}"
        ));
    }
    let cfg = statten_train::config::model_with_sets(preset, sets)
        .map_err(|e| format!("--train: {e}"))?;
    // Before the device starts: CubeCL reads its log settings once.
    let log = statten::profile::enable();
    let dev = dev_name.device();
    probe(dev_name, &dev)?;
    statten_core::precision::check_support(precision, &dev)
        .map_err(|why| format!("--precision {precision}: device {dev_name} cannot: {why}"))?;
    let (mut it, _) = statten::bench::train_step_with_rate(&dev, &cfg, batch, precision);
    let failed = |e: String| step_failed(preset, batch, dev_name, &e);
    // Two warm-up steps at least: the first step's backward runs (and is tuned) in the second.
    for _ in 0..warmup.max(2) {
        it().map_err(failed)?;
    }
    let from = log.settle();
    let steps = iters.max(1) as usize;
    let t0 = std::time::Instant::now();
    for _ in 0..steps {
        it().map_err(failed)?;
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let to = log.settle();
    let launches = log.launches(from, to)?;
    let profile = statten::profile::StepProfile::of(&launches, steps);
    println!(
        "profile of train {preset} T={} batch {batch} on {dev_name}: {wall:.1} ms/step with \
         every launch timed (log: {})",
        cfg.time_steps,
        log.path().display()
    );
    print!("{}", profile.table());
    Ok(())
}

/// `bench --allreduce`: the gradient all-reduce of `preset` over the MPI ranks.
fn run_bench_allreduce(
    preset: &str,
    sets: &[String],
    iters: u64,
    warmup: u64,
) -> Result<(), String> {
    let cfg = statten_train::config::model_with_sets(preset, sets)
        .map_err(|e| format!("--allreduce: {e}"))?;
    let model = cfg
        .init(&burn::tensor::Device::flex())
        .map_err(|e| e.to_string())?;
    let params = statten_core::models::parameter_count(&model);
    let Some(world) = mpi_world().map_err(|e| e.to_string())? else {
        return Err(
            "--allreduce needs several MPI ranks: run it under `mpirun -np N` (a \
                    statten built with --features mpi)"
                .into(),
        );
    };
    let mut buf = vec![1e-3f32; params];
    let w = world.clone();
    let mut once: statten::bench::Iteration = Box::new(move || {
        w.all_reduce_sum_f32(&mut buf);
        // Keep the values bounded (the sums grow by a factor of the ranks each call).
        let r = w.size() as f32;
        buf.iter_mut().for_each(|v| *v /= r);
        Ok(buf[0])
    });
    let med = median_ms(&mut once, warmup, iters)?;
    if world.rank() == 0 {
        println!(
            "all-reduce {preset}: {params} parameters = {:.1} MB f32 over {} ranks: {med:.2} ms \
             median of {iters} ({:.2} GB/s algorithmic)",
            params as f64 * 4.0 / 1e6,
            world.size(),
            params as f64 * 4.0 / (med * 1e-3) / 1e9
        );
    }
    Ok(())
}

/// Checks that `device` runs (a SPIR-V build refuses software adapters) and names its adapter
/// and compiler. Opens the device: the profile's log must be set up before.
fn probe(name: &DeviceName, device: &burn::tensor::Device) -> Result<(), String> {
    statten_train::device::probe_device(&name.to_string(), device).map_err(|e| e.to_string())?;
    if let Some(info) = statten_core::gpu::gpu_info(device) {
        println!("device {name}: {info}");
    }
    Ok(())
}

/// Runs the chosen benchmark with `--threads` CPU threads and the chosen convolutions.
pub fn run(a: BenchArgs) -> std::process::ExitCode {
    super::exit(run_args(a))
}

fn run_args(a: BenchArgs) -> Result<(), String> {
    let alg = a
        .conv_algorithm
        .unwrap_or_else(statten_core::conv::algorithm::current);
    statten::threads::configure(a.threads)?;
    if !a.sets.is_empty() && a.train.is_none() && a.allreduce.is_none() {
        return Err("--set applies to --train or --allreduce".into());
    }
    if let Some(preset) = &a.allreduce {
        return run_bench_allreduce(preset, &a.sets, a.iters, a.warmup);
    }
    let batch = a.batch as usize;
    if a.profile {
        let preset = a.train.as_deref().unwrap_or_default();
        return run_bench_profile(&a, preset);
    }
    for d in &a.device {
        probe(d, &d.device())?;
    }
    with_algorithm(alg, || match &a.train {
        Some(preset) => run_bench_train(&a, preset),
        None => run_bench(&a.device, a.iters, a.warmup, batch, &a.only),
    })
}
