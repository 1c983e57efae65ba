use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;
use crate::snapshot::test_dir::TestDir;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Regs {
    rip: u64,
    rflags: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    name: String,
    vcpus: Vec<Regs>,
}

fn state() -> State {
    State {
        name: "demo".into(),
        vcpus: vec![
            Regs {
                rip: 0xffff_ffff_8100_0000,
                rflags: 2,
            },
            Regs { rip: 0, rflags: 2 },
        ],
    }
}

const ORIGIN: &str = "test.oxvm";

fn decode_state(bytes: &[u8]) -> Result<(Header, State), SnapshotError> {
    decode(bytes, Path::new(ORIGIN))
}

fn header_json(version: u32, oxvm: &str) -> Vec<u8> {
    format!(
        r#"{{"format_version":{version},"oxvm_version":"{oxvm}","created_unix_s":0,"kind":"snapshot"}}"#
    )
    .into_bytes()
}

#[test]
fn round_trip() {
    let bytes = encode(Kind::Migration, &state()).unwrap();
    assert_eq!(&bytes[..8], b"OXVMSNAP");
    let (header, got) = decode_state(&bytes).unwrap();
    assert_eq!(got, state());
    assert_eq!(header.format_version, FORMAT_VERSION);
    assert_eq!(header.oxvm_version, OXVM_VERSION);
    assert_eq!(header.kind, Kind::Migration);
    assert!(header.created_unix_s > 1_600_000_000);
}

#[test]
fn layout_is_as_documented() {
    let bytes = encode(Kind::Snapshot, &state()).unwrap();
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    let header: serde_json::Value = serde_json::from_slice(&bytes[16..16 + hlen]).unwrap();
    assert_eq!(header["kind"], "snapshot");
    let plen = u64::from_le_bytes(bytes[16 + hlen..24 + hlen].try_into().unwrap()) as usize;
    let payload: State = serde_json::from_slice(&bytes[24 + hlen..24 + hlen + plen]).unwrap();
    assert_eq!(payload, state());
    assert_eq!(bytes.len(), 24 + hlen + plen + 4);
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    assert_eq!(crc, crc32(&bytes[..bytes.len() - 4]));
}

#[test]
fn every_single_bit_flip_is_refused() {
    let bytes = encode(Kind::Snapshot, &state()).unwrap();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        let err = decode_state(&b).expect_err(&format!("bit {i} flipped was accepted"));
        assert!(
            matches!(
                err,
                SnapshotError::ChecksumMismatch { .. }
                    | SnapshotError::BadMagic { .. }
                    | SnapshotError::Truncated { .. }
                    | SnapshotError::TrailingBytes { .. }
            ),
            "bit {i}: {err}"
        );
        assert!(err.to_string().starts_with(ORIGIN), "{err}");
    }
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let bytes = encode(Kind::Snapshot, &state()).unwrap();
    for len in 0..bytes.len() {
        let err = decode_state(&bytes[..len]).expect_err("truncated file accepted");
        assert!(
            matches!(err, SnapshotError::Truncated { got, .. } if got == len as u64),
            "length {len}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(ORIGIN) && msg.contains("truncated"),
            "{msg}"
        );
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = encode(Kind::Snapshot, &state()).unwrap();
    bytes.extend_from_slice(b"junk");
    let err = decode_state(&bytes).unwrap_err();
    assert!(
        matches!(err, SnapshotError::TrailingBytes { extra: 4, .. }),
        "{err}"
    );
}

#[test]
fn wrong_magic_is_refused() {
    let mut bytes = encode(Kind::Snapshot, &state()).unwrap();
    bytes[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    let err = decode_state(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::BadMagic { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not an oxvm state file") && msg.contains(ORIGIN),
        "{msg}"
    );

    let err = decode_state(b"{}").unwrap_err();
    assert!(matches!(err, SnapshotError::BadMagic { .. }), "{err}");
}

#[test]
fn newer_version_names_both_versions_and_the_writer() {
    let v = FORMAT_VERSION + 1;
    // A newer format may lay out the payload differently; only the prefix, the header's
    // oxvm_version and the trailing CRC are fixed.
    let bytes = assemble(v, &header_json(v, "7.3.1"), b"whatever a newer oxvm writes");
    let err = decode_state(&bytes).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnsupportedVersion { found, .. } if found == v),
        "{err}"
    );
    let msg = err.to_string();
    for part in [
        ORIGIN,
        &format!("format version {v}"),
        "written by oxvm 7.3.1",
        &format!("this oxvm {OXVM_VERSION}"),
        &if MIN_READABLE_VERSION == FORMAT_VERSION {
            format!("reads format version {FORMAT_VERSION} only")
        } else {
            format!("reads format versions {MIN_READABLE_VERSION} to {FORMAT_VERSION}")
        },
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

#[test]
fn older_unreadable_version_is_refused() {
    let bytes = assemble(0, &header_json(0, "0.0.1"), b"{}");
    let err = decode_state(&bytes).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnsupportedVersion { found: 0, .. }),
        "{err}"
    );
}

#[test]
fn corrupted_newer_file_is_a_checksum_error() {
    let v = FORMAT_VERSION + 1;
    let mut bytes = assemble(v, &header_json(v, "7.3.1"), b"payload");
    let n = bytes.len();
    bytes[n - 6] ^= 0x10;
    let err = decode_state(&bytes).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { .. }),
        "{err}"
    );
}

#[test]
fn decode_error_names_the_field() {
    let payload = br#"{"name":"demo","vcpus":[{"rip":1,"rflags":2},{"rip":"oops","rflags":2}]}"#;
    let bytes = assemble(FORMAT_VERSION, &header_json(1, OXVM_VERSION), payload);
    let err = decode_state(&bytes).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, SnapshotError::Decode { part: "payload", field, .. } if field == "vcpus[1].rip"),
        "{msg}"
    );
    assert!(
        msg.contains("`vcpus[1].rip`") && msg.starts_with(ORIGIN),
        "{msg}"
    );
}

#[test]
fn missing_and_unknown_fields_are_named() {
    let payload = br#"{"name":"demo","vcpus":[{"rip":1}]}"#;
    let bytes = assemble(FORMAT_VERSION, &header_json(1, OXVM_VERSION), payload);
    let msg = decode_state(&bytes).unwrap_err().to_string();
    assert!(
        msg.contains("`vcpus[0]`") && msg.contains("rflags"),
        "{msg}"
    );

    // deny_unknown_fields: state a newer oxvm added is refused, not dropped.
    let payload = br#"{"name":"demo","vcpus":[{"rip":1,"rflags":2,"pkru":0}]}"#;
    let bytes = assemble(FORMAT_VERSION, &header_json(1, OXVM_VERSION), payload);
    let msg = decode_state(&bytes).unwrap_err().to_string();
    assert!(
        msg.contains("vcpus[0].pkru") && msg.contains("unknown field"),
        "{msg}"
    );
}

#[test]
fn unknown_header_field_is_refused() {
    let header = br#"{"format_version":1,"oxvm_version":"9.0.0","created_unix_s":0,"kind":"snapshot","compression":"zstd"}"#;
    let bytes = assemble(FORMAT_VERSION, header, br#"{"name":"a","vcpus":[]}"#);
    let err = decode_state(&bytes).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Decode { part: "header", field, .. } if field == "compression"),
        "{err}"
    );
}

#[test]
fn optional_field_added_later_reads_older_files() {
    // The rule for growing a state within one format version: new fields are optional.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewerRegs {
        rip: u64,
        rflags: u64,
        #[serde(default)]
        pkru: Option<u32>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewerState {
        #[allow(dead_code)]
        name: String,
        vcpus: Vec<NewerRegs>,
    }
    let bytes = encode(Kind::Snapshot, &state()).unwrap();
    let (_, newer): (_, NewerState) = decode(&bytes, Path::new(ORIGIN)).unwrap();
    assert_eq!(newer.vcpus[0].rip, 0xffff_ffff_8100_0000);
    assert_eq!(newer.vcpus[1].rflags, 2);
    assert_eq!(newer.vcpus[1].pkru, None);
}

#[test]
fn prefix_and_header_disagree() {
    let bytes = assemble(FORMAT_VERSION, &header_json(7, "0.1.0"), b"{}");
    let err = decode_state(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::Inconsistent { .. }), "{err}");
}

#[test]
fn state_file_round_trip_leaves_no_tmp() {
    let dir = TestDir::new("state");
    let path = dir.join("state.oxvm");
    write_state_file(&path, Kind::Snapshot, &state()).unwrap();
    // Overwriting replaces the file as a whole.
    let mut s2 = state();
    s2.name = "second".into();
    write_state_file(&path, Kind::Snapshot, &s2).unwrap();
    let (header, got): (_, State) = read_state_file(&path).unwrap();
    assert_eq!((header.kind, got), (Kind::Snapshot, s2));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["state.oxvm"]);
}

#[test]
fn io_errors_name_the_file() {
    let dir = TestDir::new("state-io");
    let missing = dir.join("no-such-dir/state.oxvm");
    let msg = write_state_file(&missing, Kind::Snapshot, &state())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no-such-dir/state.oxvm.tmp"), "{msg}");
    let msg = read_state_file::<State>(&dir.join("absent.oxvm"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("absent.oxvm") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[test]
fn encode_error_names_the_file() {
    let dir = TestDir::new("state-enc");
    let path = dir.join("state.oxvm");
    let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
    let msg = write_state_file(&path, Kind::Snapshot, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("state.oxvm") && msg.contains("encode"),
        "{msg}"
    );
    assert!(!path.exists() && !crate::snapshot::durable::tmp_path(&path).exists());
}
