//! Datasets whose labels do not fit the model are errors naming the folder or file before
//! training, not an index panic inside it (or a silently shifted class).

mod common;

use std::path::{Path, PathBuf};

use statten_train::config::RunConfig;
use statten_train::train::datasets;

fn tmp(name: &str) -> PathBuf {
    common::scratch_dir("bad", name)
}

fn touch(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

const PPM: &[u8] = b"P6\n1 1\n255\n\x10\x20\x30";

fn imagenet_cfg(root: &Path, extra: &str) -> RunConfig {
    let text = format!(
        "[model]\npreset = \"imagenet-8-512\"\n[data]\ndataset = \"imagenet\"\nroot = \"{}\"\n{extra}",
        root.display()
    );
    RunConfig::parse(&text, &[]).unwrap()
}

fn err(cfg: &RunConfig) -> String {
    match datasets(cfg) {
        Ok(_) => panic!("datasets were built"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_image_folder_with_more_classes_than_the_model_is_an_error() {
    let root = tmp("imagenet-1001");
    for c in 0..1001 {
        touch(&root.join(format!("train/n{c:05}/a.ppm")), PPM);
        touch(&root.join(format!("val/n{c:05}/a.ppm")), PPM);
    }
    let e = err(&imagenet_cfg(&root, ""));
    assert!(
        e.contains(&root.display().to_string())
            && e.contains("1001 classes")
            && e.contains("model.num_classes = 1000"),
        "{e}"
    );
}

#[test]
fn a_val_labels_file_with_an_index_past_the_classes_is_an_error() {
    let root = tmp("imagenet-labels");
    touch(&root.join("train/n00001/a.ppm"), PPM);
    touch(&root.join("train/n00002/a.ppm"), PPM);
    touch(&root.join("val/x1.ppm"), PPM);
    touch(&root.join("val/x2.ppm"), PPM);
    let labels = root.join("val_labels.tsv");
    touch(&labels, b"x1.ppm\t0\nx2.ppm\t1000\n");
    let e = err(&imagenet_cfg(
        &root,
        &format!("val_labels = \"{}\"\n", labels.display()),
    ));
    // The labels file's index 1000 makes a 1001st class: named with the folder and the count.
    assert!(
        e.contains(&root.display().to_string())
            && e.contains("test set has 1001 classes")
            && e.contains("num_classes = 1000"),
        "{e}"
    );
}

#[test]
fn an_ncaltech101_root_without_101_classes_is_an_error() {
    let root = tmp("ncaltech");
    for c in ["airplanes", "ant", "anchor"] {
        for i in 0..10 {
            touch(&root.join(format!("{c}/image_{i:04}.bin")), b"");
        }
    }
    let text = format!(
        "[model]\npreset = \"ncaltech101-2-256-t10\"\n[data]\ndataset = \"ncaltech101\"\nroot = \"{}\"\ncache_dir = \"\"\n",
        root.display()
    );
    let cfg = RunConfig::parse(&text, &[]).unwrap();
    let e = err(&cfg);
    assert!(
        e.contains(&root.display().to_string()) && e.contains("3 classes") && e.contains("101"),
        "{e}"
    );
}
