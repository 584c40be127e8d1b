//! CIFAR readers on the real first-20 test records in `../shared/data/cifar`.

use std::path::PathBuf;

use statten_data::cifar::{read_records, CifarKind, CifarSet};

fn data_dir() -> PathBuf {
    let d =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/cifar");
    assert!(d.is_dir(), "shared data folder missing at {}", d.display());
    d
}

#[test]
fn cifar10_first20_labels_and_pixels() {
    let mut set = CifarSet::default();
    read_records(
        &data_dir().join("cifar10_test_batch_first20.bin"),
        CifarKind::Cifar10,
        &mut set,
    )
    .unwrap();
    assert_eq!(set.len(), 20);
    assert_eq!(
        set.labels,
        vec![3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    let img = set.image(0);
    assert_eq!(&img[0..4], &[158, 159, 165, 166]);
    assert_eq!(&img[1024..1028], &[112, 111, 116, 118]);
    assert_eq!(&img[2048..2052], &[49, 47, 51, 53]);
    assert!(set.coarse_labels.is_empty());
}

#[test]
fn cifar100_first20_fine_and_coarse() {
    let mut set = CifarSet::default();
    read_records(
        &data_dir().join("cifar100_test_first20.bin"),
        CifarKind::Cifar100,
        &mut set,
    )
    .unwrap();
    assert_eq!(
        set.labels,
        vec![49, 33, 72, 51, 71, 92, 15, 14, 23, 0, 71, 75, 81, 69, 40, 43, 92, 97, 70, 53]
    );
    assert_eq!(&set.coarse_labels[..5], &[10, 10, 0, 4, 10]);
}

#[test]
fn truncated_file_is_an_error_naming_it() {
    let src = std::fs::read(data_dir().join("cifar10_test_batch_first20.bin")).unwrap();
    let p = std::env::temp_dir().join(format!("statten-trunc-{}.bin", std::process::id()));
    std::fs::write(&p, &src[..src.len() - 7]).unwrap();
    let err = read_records(&p, CifarKind::Cifar10, &mut CifarSet::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("statten-trunc") && err.contains("3073"),
        "{err}"
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn pickle_folder_gets_a_pointer_to_the_binary_version() {
    let dir = std::env::temp_dir().join(format!("statten-pickle-{}", std::process::id()));
    let py = dir.join("cifar-10-batches-py");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::write(py.join("test_batch"), b"not read").unwrap();
    let err = statten_data::cifar::load(&dir, CifarKind::Cifar10, statten_data::cifar::Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("binary version") && err.contains("cifar-10-binary.tar.gz"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
