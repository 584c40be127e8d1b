//! The parity checks cannot pass on broken references: a copy of a shipped fixture with one NaN
//! injected into each group in turn, a truncated tensor, a key on one side only, or a setting
//! the model cannot take each FAIL (or are refused with the key named).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use statten::fixture::{read_safetensors, FixTensor};
use statten::parity::{run_parity, ParityOptions};

const BASE: &str = "sdt_statten_static";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "statten-parity-broken-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A copy of the base fixture in which `edit` changed the tensors and `cfg` the config.
fn broken(
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, FixTensor>),
    cfg: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let src = common::fixtures_dir().join(BASE);
    let dst = tmp(name);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(
        src.join("weights.safetensors"),
        dst.join("weights.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg(&mut config);
    std::fs::write(dst.join("config.json"), config.to_string()).unwrap();
    let mut tensors = read_safetensors(&src.join("tensors.safetensors")).unwrap();
    edit(&mut tensors);
    write_f64(&dst.join("tensors.safetensors"), &tensors);
    dst
}

fn write_f64(path: &Path, tensors: &HashMap<String, FixTensor>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.shape.clone(),
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// The first key (sorted) with this prefix.
fn first_key(t: &HashMap<String, FixTensor>, prefix: &str) -> String {
    let mut k: Vec<&String> = t.keys().filter(|k| k.starts_with(prefix)).collect();
    k.sort();
    k.first()
        .unwrap_or_else(|| panic!("no {prefix} tensor"))
        .to_string()
}

fn failed_groups(dir: &Path) -> Vec<String> {
    let r = run_parity(dir, &Device::flex(), &ParityOptions::default()).unwrap();
    r.groups
        .iter()
        .filter(|g| !g.pass)
        .map(|g| g.name.clone())
        .collect()
}

#[test]
fn the_unbroken_copy_passes() {
    // Sanity for everything below: the rewritten copy (f64 tensors) still passes.
    let dir = broken("intact", |_| {}, |_| {});
    assert_eq!(failed_groups(&dir), Vec::<String>::new());
}

#[test]
fn a_nan_in_any_group_fails_that_group() {
    for (prefix, group) in [
        ("logits_eval", "logits_eval"),
        ("logits_train", "logits_train"),
        ("loss_train", "loss_train"),
        ("spike_count_eval/", "spikes_eval"),
        ("spike_count/", "spikes_train"),
        ("grad/", "grads"),
        ("bn_after/", "bn_after"),
        ("after_step/", "after_step"),
    ] {
        let dir = broken(
            &format!("nan-{group}"),
            |t| {
                let k = first_key(t, prefix);
                t.get_mut(&k).unwrap().values[0] = f64::NAN;
            },
            |_| {},
        );
        let failed = failed_groups(&dir);
        assert!(
            failed.iter().any(|g| g == group),
            "NaN in {prefix}: {group} passed (failed: {failed:?})"
        );
        // An infinity fails as well.
        let dir = broken(
            &format!("inf-{group}"),
            |t| {
                let k = first_key(t, prefix);
                t.get_mut(&k).unwrap().values[0] = f64::INFINITY;
            },
            |_| {},
        );
        assert!(
            failed_groups(&dir).iter().any(|g| g == group),
            "Inf in {prefix}: {group} passed"
        );
    }
}

#[test]
fn truncated_tensors_and_one_sided_keys_fail() {
    for (prefix, group) in [
        ("grad/", "grads"),
        ("bn_after/", "bn_after"),
        ("after_step/", "after_step"),
        ("logits_train", "logits_train"),
    ] {
        let dir = broken(
            &format!("short-{group}"),
            |t| {
                let k = first_key(t, prefix);
                let x = t.get_mut(&k).unwrap();
                x.values.pop();
                x.shape = vec![x.values.len()];
            },
            |_| {},
        );
        assert!(
            failed_groups(&dir).iter().any(|g| g == group),
            "a truncated {prefix} tensor passed"
        );
        // A key on one side only.
        let dir = broken(
            &format!("extra-{group}"),
            |t| {
                let k = first_key(t, prefix);
                let v = t[&k].clone();
                t.insert(format!("{prefix}no_such_layer.weight"), v);
            },
            |_| {},
        );
        if prefix.ends_with('/') {
            assert!(
                failed_groups(&dir).iter().any(|g| g == group),
                "an extra {prefix} key passed"
            );
        }
        let dir = broken(
            &format!("missing-{group}"),
            |t| {
                let k = first_key(t, prefix);
                t.remove(&k);
            },
            |_| {},
        );
        match run_parity(&dir, &Device::flex(), &ParityOptions::default()) {
            Ok(r) => assert!(
                r.groups.iter().any(|g| g.name == group && !g.pass),
                "a missing {prefix} tensor passed"
            ),
            Err(e) => assert!(e.contains(prefix.trim_end_matches('/')), "{e}"),
        }
    }
    // A spiking layer without a reference count.
    let dir = broken(
        "spikes-missing",
        |t| {
            let k = first_key(t, "spike_count/");
            t.remove(&k);
        },
        |_| {},
    );
    assert!(failed_groups(&dir).iter().any(|g| g == "spikes_train"));
}

#[test]
fn settings_the_model_cannot_take_are_refused_with_the_key() {
    for (key, edit) in [
        (
            "batchnorm.eps",
            Box::new(|c: &mut serde_json::Value| c["batchnorm"]["eps"] = 1e-3.into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "batchnorm.momentum",
            Box::new(|c: &mut serde_json::Value| c["batchnorm"]["momentum"] = 0.2.into()),
        ),
        (
            "v_reset",
            Box::new(|c: &mut serde_json::Value| c["v_reset"] = 0.5.into()),
        ),
        (
            "head_dim",
            Box::new(|c: &mut serde_json::Value| c["head_dim"] = 16.into()),
        ),
        (
            "optimizer.betas",
            Box::new(|c: &mut serde_json::Value| {
                c["optimizer"]["betas"] = serde_json::json!([0.9])
            }),
        ),
        (
            "tau",
            Box::new(|c: &mut serde_json::Value| c["tau"] = "two".into()),
        ),
        (
            "label_smoothing",
            Box::new(|c: &mut serde_json::Value| c["label_smoothing"] = "none".into()),
        ),
    ] {
        let dir = broken(
            &format!("cfg-{}", key.replace('.', "-")),
            |_| {},
            |c| edit(c),
        );
        let e = run_parity(&dir, &Device::flex(), &ParityOptions::default()).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    // A label smoothing the reference used is applied, not replaced by 0: the recorded loss
    // (made without smoothing) then no longer matches.
    let dir = broken("ls", |_| {}, |c| c["label_smoothing"] = 0.1.into());
    assert!(failed_groups(&dir).iter().any(|g| g == "loss_train"));
}
