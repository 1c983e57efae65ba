//! The state container: one versioned, checksummed file holding a header and the
//! caller's state as JSON. Snapshots, restores and migrations all use it; the layout and
//! the version rule are in docs/snapshot-format.md.
//!
//! ```text
//! offset          size  field
//! 0               8     magic "OXVMSNAP"
//! 8               4     format version, u32 LE
//! 12              4     header length H, u32 LE
//! 16              H     header, JSON (Header)
//! 16+H            8     payload length P, u64 LE
//! 24+H            P     payload, JSON (the caller's state)
//! 24+H+P          4     CRC-32 (IEEE) of bytes 0 .. 24+H+P, u32 LE
//! ```
//!
//! Everything is checked before any JSON is parsed: magic, lengths, checksum, version.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checksum::crc32;
use super::durable::replace_file;
use super::error::SnapshotError;
use super::json_path;

/// The first 8 bytes of every state file.
pub const MAGIC: [u8; 8] = *b"OXVMSNAP";
/// The format version this oxvm writes.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format version this oxvm reads (older ones through upgrade code in
/// `decode_payload`).
pub const MIN_READABLE_VERSION: u32 = 1;
/// The oxvm version recorded in the files this oxvm writes.
pub const OXVM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Magic, format version, header length.
const PREFIX_LEN: usize = 16;
const PAYLOAD_LEN_LEN: usize = 8;
const CRC_LEN: usize = 4;

/// What a state file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A saved VM (`DIR/state.oxvm`).
    Snapshot,
    /// The device and vCPU state sent at the end of a live migration.
    Migration,
    /// A named snapshot's state (`SNAPSHOTS_DIR/NAME/state.oxvm`): only a revert,
    /// which also puts the disks back, may use it; `oxvm restore` refuses it (it
    /// would pair the snapshot's memory with today's disks).
    #[serde(rename = "named-snapshot")]
    NamedSnapshot,
}

/// The header of a state file. Fields added later must be optional (`#[serde(default)]`);
/// an unknown field is refused, as in component states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The same as the format version in the binary prefix.
    pub format_version: u32,
    /// The version of the oxvm that wrote the file.
    pub oxvm_version: String,
    /// When the file was written, seconds since the Unix epoch.
    pub created_unix_s: u64,
    pub kind: Kind,
}

/// Encodes `state` in a state file of this oxvm's format version. Fails only when the
/// state's `Serialize` does (e.g. a map whose keys are not strings).
pub fn encode<T: Serialize>(kind: Kind, state: &T) -> serde_json::Result<Vec<u8>> {
    let header = Header {
        format_version: FORMAT_VERSION,
        oxvm_version: OXVM_VERSION.to_string(),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        kind,
    };
    let header = serde_json::to_vec(&header)?;
    let payload = serde_json::to_vec(state)?;
    Ok(assemble(FORMAT_VERSION, &header, &payload))
}

/// Frames a header and a payload: prefix, lengths, CRC.
pub(crate) fn assemble(version: u32, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let header_len = u32::try_from(header.len()).expect("state header above 4 GiB");
    let mut out =
        Vec::with_capacity(PREFIX_LEN + header.len() + PAYLOAD_LEN_LEN + payload.len() + CRC_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a state file's bytes. `origin` names the file (or stream) in messages.
/// Magic, lengths, checksum and version are checked before any JSON is parsed.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    origin: &Path,
) -> Result<(Header, T), SnapshotError> {
    let len = bytes.len() as u64;
    let truncated = |expected: u64| SnapshotError::Truncated {
        path: origin.to_path_buf(),
        expected,
        got: len,
    };
    let min_len = (PREFIX_LEN + PAYLOAD_LEN_LEN + CRC_LEN) as u64;

    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        return Err(truncated(min_len));
    }
    if bytes[..MAGIC.len().min(bytes.len())] != MAGIC {
        return Err(SnapshotError::BadMagic {
            path: origin.to_path_buf(),
            found: bytes[..MAGIC.len().min(bytes.len())].to_vec(),
        });
    }
    if bytes.len() < PREFIX_LEN {
        return Err(truncated(min_len));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;

    if !(MIN_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(unsupported(bytes, version, header_len, origin));
    }

    // This version's layout: find the payload, check the lengths add up to the file's.
    let header_end = PREFIX_LEN + header_len;
    let payload_start = header_end + PAYLOAD_LEN_LEN;
    if bytes.len() < payload_start {
        return Err(truncated((payload_start + CRC_LEN) as u64));
    }
    let payload_len = u64::from_le_bytes(bytes[header_end..payload_start].try_into().unwrap());
    let total = (payload_start as u64)
        .saturating_add(payload_len)
        .saturating_add(CRC_LEN as u64);
    if len < total {
        return Err(truncated(total));
    }
    if len > total {
        return Err(SnapshotError::TrailingBytes {
            path: origin.to_path_buf(),
            extra: len - total,
        });
    }
    check_crc(bytes, origin)?;
    let payload_end = payload_start + payload_len as usize;

    let header_json = &bytes[PREFIX_LEN..header_end];
    let header: Header = serde_json::from_slice(header_json)
        .map_err(|e| decode_error(origin, "header", header_json, e))?;
    if header.format_version != version {
        return Err(SnapshotError::Inconsistent {
            path: origin.to_path_buf(),
            what: format!(
                "the binary prefix says format version {version}, the JSON header says {}",
                header.format_version
            ),
        });
    }
    let state = decode_payload(version, &bytes[payload_start..payload_end], origin)?;
    Ok((header, state))
}

/// Parses the payload of a format version this oxvm reads.
fn decode_payload<T: DeserializeOwned>(
    version: u32,
    payload: &[u8],
    origin: &Path,
) -> Result<T, SnapshotError> {
    // Reading an older format version goes here: parse the old payload and convert it
    // to the current one (one upgrade function per version step, kept in the tree for as
    // long as MIN_READABLE_VERSION allows that version). Version 1 is the first: there is
    // nothing older yet.
    debug_assert!((MIN_READABLE_VERSION..=FORMAT_VERSION).contains(&version));
    serde_json::from_slice(payload).map_err(|e| decode_error(origin, "payload", payload, e))
}

/// Every format version ends with a CRC-32 of all the bytes before it, so this check
/// works on files of any version.
fn check_crc(bytes: &[u8], origin: &Path) -> Result<(), SnapshotError> {
    let (body, stored) = bytes.split_at(bytes.len() - CRC_LEN);
    let expected = u32::from_le_bytes(stored.try_into().unwrap());
    let got = crc32(body);
    if expected != got {
        return Err(SnapshotError::ChecksumMismatch {
            path: origin.to_path_buf(),
            expected,
            got,
        });
    }
    Ok(())
}

/// The error for a format version outside the readable range. The prefix, the header's
/// `oxvm_version` and the trailing CRC keep their meaning in every version, so the file
/// is checked for corruption first (a flipped version bit is a corruption, not a newer
/// oxvm) and the message can name the oxvm that wrote it.
fn unsupported(bytes: &[u8], version: u32, header_len: usize, origin: &Path) -> SnapshotError {
    if bytes.len() < PREFIX_LEN + CRC_LEN {
        return SnapshotError::Truncated {
            path: origin.to_path_buf(),
            expected: (PREFIX_LEN + CRC_LEN) as u64,
            got: bytes.len() as u64,
        };
    }
    if let Err(e) = check_crc(bytes, origin) {
        return e;
    }
    let writer = bytes
        .get(PREFIX_LEN..PREFIX_LEN.saturating_add(header_len))
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok())
        .and_then(|h| h.get("oxvm_version")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    SnapshotError::UnsupportedVersion {
        path: origin.to_path_buf(),
        found: version,
        writer,
        ours: OXVM_VERSION,
        min: MIN_READABLE_VERSION,
        max: FORMAT_VERSION,
    }
}

fn decode_error(
    origin: &Path,
    part: &'static str,
    json: &[u8],
    source: serde_json::Error,
) -> SnapshotError {
    SnapshotError::Decode {
        path: origin.to_path_buf(),
        part,
        field: json_path::field_at(json, json_path::error_offset(json, &source)),
        source,
    }
}

/// Writes `state` to `path` durably: through `path.tmp`, fsynced and renamed, so a crash
/// leaves either the old file or the complete new one.
pub fn write_state_file<T: Serialize>(
    path: &Path,
    kind: Kind,
    state: &T,
) -> Result<(), SnapshotError> {
    let bytes = encode(kind, state).map_err(|source| SnapshotError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    replace_file(path, |file, tmp| {
        file.write_all_at(&bytes, 0)
            .map_err(SnapshotError::io(tmp, "write"))
    })
}

/// Reads and decodes the state file at `path` (see [`decode`]).
pub fn read_state_file<T: DeserializeOwned>(path: &Path) -> Result<(Header, T), SnapshotError> {
    let bytes = std::fs::read(path).map_err(SnapshotError::io(path, "read"))?;
    decode(&bytes, path)
}

#[cfg(test)]
mod tests;
