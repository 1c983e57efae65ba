//! The migration wire format: framed messages (`tag u8, length u64 LE, payload`). The
//! first message is a versioned hello; the destination answers accept or refuse
//! before any memory flows. Pages travel in batches; the device and vCPU state is the
//! same container a save writes (`snapshot::encode`, kind `migration`).
//!
//! The end is a two-step hand-over, so that the guest never runs on both sides: the
//! destination builds the VM from the state and keeps it paused (`Built`); only when
//! the source says `Go` does it run the guest (and answer `Done`). A source that sent
//! no `Go` takes the guest back on any failure; one that sent `Go` but got no `Done`
//! cannot know which side has the guest, and stays paused for the operator.

use std::io::{Read, Write};

use kvm_bindings::kvm_cpuid_entry2;
use oxvm_api::VmConfig;
use serde::{Deserialize, Serialize};

use super::MigrationError;

pub const MAGIC: &str = "OXVMMIGR";
/// Bumped when a peer of the previous version would misread the stream; a
/// destination refuses any other version with a message naming both.
pub const PROTOCOL_VERSION: u32 = 2;
pub const PAGE_SIZE: usize = 4096;
/// Largest frame accepted: a hostile or broken peer cannot make us allocate more.
const MAX_FRAME: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    Hello = 1,
    Accept = 2,
    Refuse = 3,
    Pages = 4,
    ZeroPages = 5,
    State = 6,
    Done = 7,
    Failed = 8,
    /// Destination: the VM is built from the state, paused, waiting for `Go`.
    Built = 9,
    /// Source: the guest is yours; run it.
    Go = 10,
    /// Source, local migration: the layout of the guest memory whose memfd was just
    /// passed (`transport::Stream::send_file`); no pages follow.
    SharedMemory = 11,
}

impl Tag {
    fn from_u8(v: u8) -> Option<Tag> {
        use Tag::*;
        [
            Hello,
            Accept,
            Refuse,
            Pages,
            ZeroPages,
            State,
            Done,
            Failed,
            Built,
            Go,
            SharedMemory,
        ]
        .into_iter()
        .find(|t| *t as u8 == v)
    }
}

/// What the source says first.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub magic: String,
    pub protocol: u32,
    pub oxvm_version: String,
    /// The VM as the source runs it (the destination builds the same machine).
    pub config: VmConfig,
    /// The CPUID the guest sees; the destination checks its host offers it.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Local migration: the guest memory is handed over as a memfd over this (Unix)
    /// connection instead of being sent page by page.
    #[serde(default)]
    pub local: bool,
}

/// A refusal or failure, with the reason.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

pub fn write_frame(w: &mut dyn Write, tag: Tag, payload: &[u8]) -> Result<(), MigrationError> {
    let mut head = [0u8; 9];
    head[0] = tag as u8;
    head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    w.write_all(&head)
        .and_then(|_| w.write_all(payload))
        .map_err(|source| MigrationError::Io {
            what: "sending".into(),
            source,
        })
}

pub fn write_json<T: Serialize>(w: &mut dyn Write, tag: Tag, v: &T) -> Result<(), MigrationError> {
    let bytes = serde_json::to_vec(v).map_err(|e| MigrationError::Protocol(e.to_string()))?;
    write_frame(w, tag, &bytes)
}

pub fn read_frame(r: &mut dyn Read) -> Result<(Tag, Vec<u8>), MigrationError> {
    let io = |source| MigrationError::Io {
        what: "receiving".into(),
        source,
    };
    let mut head = [0u8; 9];
    r.read_exact(&mut head).map_err(io)?;
    let tag = Tag::from_u8(head[0])
        .ok_or_else(|| MigrationError::Protocol(format!("unknown message type {}", head[0])))?;
    let len = u64::from_le_bytes(head[1..].try_into().unwrap_or_default());
    if len > MAX_FRAME {
        return Err(MigrationError::Protocol(format!(
            "message of {len} bytes is above the limit of {MAX_FRAME}"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(io)?;
    Ok((tag, payload))
}

pub fn parse_json<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    what: &str,
) -> Result<T, MigrationError> {
    serde_json::from_slice(payload).map_err(|e| MigrationError::Protocol(format!("{what}: {e}")))
}

/// Check a hello from a source; the reason is sent back in a refusal.
pub fn check_hello(h: &Hello) -> Result<(), String> {
    if h.magic != MAGIC {
        return Err(format!(
            "not an oxvm migration stream (magic {:?})",
            h.magic
        ));
    }
    if h.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "migration protocol {} (oxvm {}) is not supported: this oxvm {} speaks protocol {PROTOCOL_VERSION}",
            h.protocol,
            h.oxvm_version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok(())
}

/// A batch of pages: `(gpa u64 LE, PAGE_SIZE bytes)` each.
pub fn pages_payload(pages: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages.len() * (8 + PAGE_SIZE));
    for (gpa, data) in pages {
        out.extend_from_slice(&gpa.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// Split a `Pages` payload; refuses a payload that is not whole pages.
pub fn split_pages(payload: &[u8]) -> Result<Vec<(u64, &[u8])>, MigrationError> {
    let unit = 8 + PAGE_SIZE;
    if !payload.len().is_multiple_of(unit) {
        return Err(MigrationError::Protocol(format!(
            "page batch of {} bytes is not whole pages",
            payload.len()
        )));
    }
    Ok(payload
        .chunks_exact(unit)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().unwrap_or_default()),
                &c[8..],
            )
        })
        .collect())
}

/// Split a `ZeroPages` payload (`gpa u64 LE` each).
pub fn split_zero_pages(payload: &[u8]) -> Result<Vec<u64>, MigrationError> {
    if !payload.len().is_multiple_of(8) {
        return Err(MigrationError::Protocol(
            "zero-page list is not whole entries".into(),
        ));
    }
    Ok(payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_named() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            Tag::Pages,
            &pages_payload(&[(0x2000, vec![7; PAGE_SIZE])]),
        )
        .unwrap();
        write_json(
            &mut buf,
            Tag::Refuse,
            &Reason {
                reason: "no".into(),
            },
        )
        .unwrap();
        let mut r = &buf[..];
        let (t, p) = read_frame(&mut r).unwrap();
        assert_eq!(t, Tag::Pages);
        let pages = split_pages(&p).unwrap();
        assert_eq!(pages[0].0, 0x2000);
        assert_eq!(pages[0].1[0], 7);
        let (t, p) = read_frame(&mut r).unwrap();
        assert_eq!(t, Tag::Refuse);
        assert_eq!(parse_json::<Reason>(&p, "refusal").unwrap().reason, "no");

        let e = read_frame(&mut &[99u8, 0, 0, 0, 0, 0, 0, 0, 0][..]).unwrap_err();
        assert!(e.to_string().contains("unknown message type 99"), "{e}");
        let mut huge = vec![Tag::Pages as u8];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_frame(&mut &huge[..])
            .unwrap_err()
            .to_string()
            .contains("limit"));
        // Cut short: an I/O error, not a hang or a panic.
        assert!(read_frame(&mut &buf[..20]).is_err());
        assert!(split_pages(&[0u8; 100]).is_err());
    }

    #[test]
    fn a_hello_of_another_protocol_is_refused_naming_both_versions() {
        let mut h = Hello {
            magic: MAGIC.into(),
            protocol: 7,
            oxvm_version: "9.9.9".into(),
            config: serde_json::from_str(
                r#"{"name":"m","memory_mib":32,"boot":{"raw":{"path":"/x","load_address":1048576}}}"#,
            )
            .unwrap(),
            cpuid: vec![],
            local: false,
        };
        let e = check_hello(&h).unwrap_err();
        assert!(e.contains("protocol 7") && e.contains("9.9.9"), "{e}");
        h.protocol = PROTOCOL_VERSION;
        assert!(check_hello(&h).is_ok());
        h.magic = "HTTP".into();
        assert!(check_hello(&h).is_err());
    }
}
