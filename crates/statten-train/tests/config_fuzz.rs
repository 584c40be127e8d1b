//! Bounded, seeded fuzzing of run-config reading: thousands of truncated and mutated copies of
//! every shipped recipe, read from a file. No input may panic, and every error names the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use statten_train::config::RunConfig;

fn recipes() -> Vec<(String, String)> {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../configs");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn damaged_run_configs_are_errors_naming_the_file() {
    let recipes = recipes();
    assert!(recipes.len() >= 20, "recipes not found");
    let dir = std::env::temp_dir().join(format!("statten-config-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.toml");
    // Fragments a damaged config may gain: wrong types, unknown keys, odd numbers.
    let pieces = [
        "= -1",
        "= 0",
        "= 1e400",
        "= nan",
        "= \"x\"",
        "= [",
        "]",
        "[model]",
        "[train]",
        "[data]",
        "= true",
        "batch_size = 0",
        "time_steps = 0",
        "img_size = 0",
        "chunk_size = 0",
        "embed_dim = 7",
        "num_heads = 0",
        "epochs = 0",
        "lr = -1.0",
        "scale = [0.0, 1.0]",
        "ratio = [2.0, 1.0]",
        "mean = [0.5]",
        "\u{0}",
        "é",
        "=",
        "\n[[x]]\n",
        "depth = 0",
        "pooling_stat = \"01\"",
        "frame_size = [0, 0]",
        "workers = 99999999999999999999",
    ];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut errors, mut ok) = (0, 0);
    for case in 0..3000 {
        let (name, good) = &recipes[case % recipes.len()];
        let mut text: Vec<char> = good.chars().collect();
        match next() % 3 {
            0 => text.truncate(next() as usize % text.len()),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = next() as usize % text.len();
                    text[at] = char::from_u32(32 + (next() % 95) as u32).unwrap();
                }
            }
            _ => {
                let at = next() as usize % text.len();
                let p = pieces[next() as usize % pieces.len()];
                let ins: Vec<char> = format!("\n{p}\n").chars().collect();
                text.splice(at..at, ins);
            }
        }
        let text: String = text.into_iter().collect();
        std::fs::write(&path, &text).unwrap();
        match catch_unwind(AssertUnwindSafe(|| RunConfig::load(&path, &[]))) {
            Err(_) => panic!("case {case} (from {name}) panicked on:\n{text}"),
            Ok(Err(e)) => {
                assert!(
                    e.to_string().contains(&path.display().to_string()),
                    "case {case}: error without the file: {e}"
                );
                errors += 1;
            }
            Ok(Ok(cfg)) => {
                // A config that reads must build its model without panicking (shapes checked).
                ok += 1;
                let _ = cfg.validate();
            }
        }
    }
    println!("3000 damaged configs: {errors} errors, {ok} still valid, no panic");
    assert!(errors > 1000, "only {errors} errors");
}
