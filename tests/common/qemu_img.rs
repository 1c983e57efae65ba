//! `qemu-img` as the tests' independent reader and maker of disk images (the README's
//! test command installs qemu-utils).

use std::path::Path;
use std::process::Command;

/// Run `qemu-img args…`; its stdout. A failure fails the test with its stderr.
pub fn qemu_img<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (apt-get install qemu-utils)");
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "qemu-img {}: {}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new, empty qcow2 image of `size` (qemu-img's syntax: "8M", "64M").
pub fn create_qcow2(path: &Path, size: &str) {
    qemu_img(&[
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        path.as_os_str(),
        size.as_ref(),
    ]);
}

/// The backing file name in `image`'s qcow2 header, read while a VM may hold it.
pub fn backing_file(image: &Path) -> Option<String> {
    let json = qemu_img(&[
        "info".as_ref(),
        "-U".as_ref(),
        "--output=json".as_ref(),
        image.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["backing-filename"].as_str().map(str::to_string)
}

/// What a guest sees of `image` and its backing chain, as raw bytes (read with `-U`:
/// the VM may have it open).
pub fn guest_view(image: &Path) -> Vec<u8> {
    let out = image.with_extension("view.raw");
    qemu_img(&[
        "convert".as_ref(),
        "-U".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        image.as_os_str(),
        out.as_os_str(),
    ]);
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}
