//! Fashion-MNIST from the Debian package `dataset-fashion-mnist` (installed by `.ci/run`), and
//! IDX error handling.

use std::path::Path;

use statten_data::cifar::Split;
use statten_data::mnist::{load, parse_idx, FASHION_MNIST_SYSTEM_DIR};

#[test]
fn all_70000_fashion_mnist_images_7000_per_class() {
    assert!(
        Path::new(FASHION_MNIST_SYSTEM_DIR).is_dir(),
        "Fashion-MNIST not installed: apt-get install dataset-fashion-mnist"
    );
    let mut per_class = [0usize; 10];
    let mut total = 0;
    for split in [Split::Train, Split::Test] {
        let set = load(None, split).unwrap();
        assert_eq!((set.rows, set.cols), (28, 28));
        assert_eq!(set.pixels.len(), set.len() * 784);
        total += set.len();
        for &l in &set.labels {
            per_class[l as usize] += 1;
        }
        // Images are real: not blank, full 8-bit range used.
        assert!(set.image(0).iter().any(|&p| p > 200) && set.image(0).contains(&0));
    }
    assert_eq!(total, 70_000);
    assert_eq!(per_class, [7_000; 10]);
}

#[test]
fn idx_errors_name_the_file() {
    let p = Path::new("some/file-idx3-ubyte");
    let mut good = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    good.extend([1u8; 8]);
    assert_eq!(parse_idx(p, &good, 3).unwrap().0, vec![2, 2, 2]);
    let err = parse_idx(p, &good[..good.len() - 1], 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("some/file-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
    let mut bad = good.clone();
    bad[3] = 1;
    let err = parse_idx(p, &bad, 3).unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");
    let err = load(Some(Path::new("/nonexistent/fmnist")), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/fmnist") && err.contains("not found"),
        "{err}"
    );
}
