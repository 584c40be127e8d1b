//! What a user sees: recipes by name from any folder, `configs show`, `train --dry-run`, the
//! per-step log and summary timestamps, `eval --split --json`, `statten plot` over two runs,
//! the energy table once per run, and typo'd enumerated values rejected.

#[macro_use]
mod common;

use common::statten_in;

const CFG: &str = concat!(
    tiny_fmnist_model!(),
    r#"
[data]
dataset = "fashion-mnist"
train_limit = 96
test_limit = 64
workers = 1
[schedule]
epochs = 2
warmup_epochs = 0
cooldown_epochs = 0
[train]
batch_size = 16
eval_interval = 2
log_every = 2
"#
);

#[test]
fn recipes_are_compiled_in_and_found_by_name_anywhere() {
    let elsewhere = common::scratch_dir("experience", "elsewhere");
    let (ok, text) = statten_in(&elsewhere, &["configs"]);
    assert!(ok, "{text}");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for want in [
        "cifar10-2-512",
        "imagenet-8-768",
        "quickstart",
        "cifar10dvs-2-256-t16",
    ] {
        assert!(names.contains(&want), "{want} missing from:\n{text}");
    }
    let (ok, text) = statten_in(&elsewhere, &["configs", "show", "cifar10-2-512"]);
    assert!(
        ok && text.contains("[model]") && text.contains("cifar10-2-512"),
        "{text}"
    );
    let (ok, text) = statten_in(&elsewhere, &["configs", "show", "cifar10-2-521"]);
    assert!(
        !ok && text.contains("did you mean `cifar10-2-512`"),
        "{text}"
    );
    // The quick start by name, from a folder without configs/: resolved, printed, not run.
    let (ok, text) = statten_in(
        &elsewhere,
        &["train", "--config", "quickstart", "--dry-run"],
    );
    assert!(ok, "{text}");
    for want in [
        "recipe quickstart",
        "[model]",
        "parameters",
        "FashionMnist",
        "Train split",
        "60000 samples",
        "dry run: nothing was trained",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    assert!(
        !elsewhere.join("runs").exists(),
        "a dry run wrote a run directory"
    );
}

#[test]
fn enumerated_values_are_listed_and_typos_rejected() {
    let (ok, text) = common::statten(&["eval", "--help"]);
    assert!(
        ok && text.contains("- train:") && text.contains("- test:"),
        "{text}"
    );
    let (ok, text) = common::statten(&["data", "inspect", "--help"]);
    assert!(
        ok && text.contains("cifar10-dvs") && text.contains("fashion-mnist"),
        "{text}"
    );
    let (ok, text) = common::statten(&["data", "inspect", "--dataset", "cifar11"]);
    assert!(!ok && text.contains("cifar11"), "{text}");
    let (ok, text) = common::statten(&["eval", "--checkpoint", "x.safetensors", "--split", "tset"]);
    assert!(!ok && text.contains("tset"), "{text}");
}

#[test]
fn a_run_logs_steps_evaluates_by_split_and_plots_with_another() {
    let dir = common::scratch_dir("experience", "run");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, CFG).unwrap();
    let cfg_s = cfg.display().to_string();
    let mut outs = Vec::new();
    for name in ["statten", "sdsa"] {
        let out = dir.join(name);
        let out_s = out.display().to_string();
        let mut args = vec![
            "train",
            "--config",
            &cfg_s,
            "--output",
            &out_s,
            "--threads",
            "1",
        ];
        if name == "sdsa" {
            args.extend(["--set", "model.attention=\"sdsa\""]);
        }
        let (ok, text) = statten_in(&dir, &args);
        assert!(ok, "{text}");
        // Epoch 1 is not evaluated (eval_interval = 2): no NaN printed.
        assert!(text.contains("(no eval this epoch)"), "{text}");
        assert!(!text.contains("NaN"), "{text}");
        // The per-layer table once, at the end; the one-line figure at each eval.
        assert_eq!(
            text.matches("firing rates of the last eval").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("energy/image").count(), 2, "{text}");
        outs.push(out);
    }
    let out = &outs[0];
    // steps.csv: 96 / 16 = 6 steps per epoch, a row every 2 → 6 rows over 2 epochs.
    let steps = std::fs::read_to_string(out.join("steps.csv")).unwrap();
    let rows: Vec<Vec<&str>> = steps
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        steps.lines().next(),
        Some("step,epoch,batch,loss,lr,images_per_s,time")
    );
    assert_eq!(rows.len(), 6, "{steps}");
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["2", "4", "6", "8", "10", "12"]
    );
    for r in &rows {
        let loss: f64 = r[3].parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{r:?}");
        assert!(r[6].ends_with('Z') && r[6].len() == 20, "{r:?}");
    }
    // summary.csv: the first epoch has empty eval cells, both a finished_at timestamp.
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let lines: Vec<Vec<&str>> = summary.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines[0][9], "finished_at");
    assert_eq!(&lines[1][3..6], &["", "", ""], "{summary}");
    // Epochs are numbered from 1, as on the console ("epoch 1/2"), in every file.
    assert_eq!((lines[1][0], lines[2][0]), ("1", "2"), "{summary}");
    assert_eq!(rows[0][1], "1", "{steps}");
    assert!(lines[2][4].parse::<f64>().unwrap() > 0.0, "{summary}");
    assert!(lines[1][9].starts_with("20") && lines[2][9].ends_with('Z'));

    // eval --json on either split, of the run's best checkpoint.
    let ck = out
        .join("checkpoints/best.safetensors")
        .display()
        .to_string();
    let mut top1 = Vec::new();
    for split in ["train", "test"] {
        let (ok, text) = statten_in(
            &dir,
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--split",
                split,
                "--json",
                "--threads",
                "1",
                "--energy-precision",
                "int8",
            ],
        );
        assert!(ok, "{text}");
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["split"], split);
        let t = v["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&t), "{v}");
        // The energy figure at the asked precision, and the totals at all three.
        let energy = &v["energy"];
        assert_eq!(energy["precision"], "int8", "{v}");
        let by: Vec<(String, f64)> = energy["by_precision"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|p| {
                let name = p["precision"].as_str().unwrap().to_string();
                (name, p["energy_mj"].as_f64().unwrap())
            })
            .collect();
        let names: Vec<&str> = by.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fp32", "fp16", "int8"], "{v}");
        assert!(
            by[0].1 > by[1].1 && by[1].1 > by[2].1 && by[2].1 > 0.0,
            "{v}"
        );
        assert_eq!(energy["energy_mj"].as_f64().unwrap(), by[2].1, "{v}");
        top1.push(t);
    }
    // The test split through `eval` equals the run's last evaluation.
    let last_eval: f64 = lines[2][4].parse().unwrap();
    assert!(
        (top1[1] - last_eval).abs() < 1e-9,
        "{top1:?} vs {last_eval}"
    );

    // `statten plot` overlays both runs.
    let png = dir.join("compare.png");
    let (a, b) = (outs[0].display().to_string(), outs[1].display().to_string());
    let png_s = png.display().to_string();
    let (ok, text) = statten_in(&dir, &["plot", &a, &b, "--out", &png_s]);
    assert!(ok, "{text}");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1500, 520));
    assert!(out.join("curves.png").is_file());
}
