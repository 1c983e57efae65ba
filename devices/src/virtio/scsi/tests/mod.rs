//! virtio-scsi tests: command data formats and errors against an in-memory disk,
//! chain parsing, the whole device on mock queues, and property-based fuzzing of what
//! a guest controls.

mod chain;
mod commands;
mod device;
mod fuzz;
mod mem_disk;

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::commands::{execute, Cdb, CmdResult, DataIn, DataOut, Exec, GuestAccessError};
use super::lun::{Lun, LunConfig};
use crate::virtio::GuestMemoryMmap;
pub(crate) use mem_disk::{DiskState, MemDisk};

/// How to build a test disk.
#[derive(Clone, Debug)]
pub(crate) struct DiskSpec {
    pub size: u64,
    pub discard: bool,
    pub read_only: bool,
    pub volatile_cache: bool,
    pub serial: Option<String>,
}

impl Default for DiskSpec {
    fn default() -> Self {
        Self {
            size: 1 << 20,
            discard: true,
            read_only: false,
            volatile_cache: true,
            serial: Some("SN-0001".into()),
        }
    }
}

impl DiskSpec {
    pub fn config(&self, id: &str) -> (LunConfig, Arc<Mutex<DiskState>>) {
        let disk = MemDisk::new(self.size, self.read_only, self.volatile_cache);
        let state = disk.state();
        (
            LunConfig {
                id: id.into(),
                backend: Box::new(disk),
                discard: self.discard,
                serial: self.serial.clone(),
            },
            state,
        )
    }

    pub fn lun(&self) -> (Lun, Arc<Mutex<DiskState>>) {
        let (config, state) = self.config("disk0");
        (Lun::new(0, config), state)
    }
}

/// A plain byte buffer standing in for guest data-in/data-out.
pub(crate) struct Buf(pub Vec<u8>);

impl DataOut for Buf {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
        let start = offset as usize;
        let src = self
            .0
            .get(start..start + buf.len())
            .ok_or(GuestAccessError { offset })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl DataIn for Buf {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), GuestAccessError> {
        let start = offset as usize;
        let dst = self
            .0
            .get_mut(start..start + buf.len())
            .ok_or(GuestAccessError { offset })?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// Run `cdb` (padded to 32 bytes as a driver sends it) with `out` as data-out and a
/// data-in buffer of `in_len` bytes; returns the result and the data-in actually sent.
pub(crate) fn run(lun: &mut Lun, cdb: &[u8], out: &[u8], in_len: usize) -> (CmdResult, Vec<u8>) {
    let mut raw = [0u8; 32];
    raw[..cdb.len()].copy_from_slice(cdb);
    let cdb = Cdb::new(&raw);
    let data_out = Buf(out.to_vec());
    let mut data_in = Buf(vec![0; in_len]);
    let mut scratch = Vec::new();
    let result = execute(&mut Exec {
        lun,
        cdb: &cdb,
        data_out: &data_out,
        data_in: &mut data_in,
        scratch: &mut scratch,
    });
    let sent = match &result {
        Ok(t) => data_in.0[..t.data_in as usize].to_vec(),
        Err(_) => Vec::new(),
    };
    (result, sent)
}

/// Guest memory for chain tests: 1 MiB at 0 and 1 MiB at 2 MiB, with a hole between.
pub(crate) fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x20_0000), 0x10_0000),
    ])
    .unwrap()
}

pub(crate) fn rd(addr: u64, len: u32) -> Descriptor {
    Descriptor::new(addr, len, 0, 0)
}

pub(crate) fn wr(addr: u64, len: u32) -> Descriptor {
    Descriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0)
}

/// The LUN field as Linux fills it (flat space addressing).
pub(crate) fn lun_field(target: u8, lun: u16) -> [u8; 8] {
    [1, target, 0x40 | (lun >> 8) as u8, lun as u8, 0, 0, 0, 0]
}

/// A `virtio_scsi_cmd_req` with a 32-byte CDB.
pub(crate) fn cmd_req(lun: [u8; 8], tag: u64, cdb: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(51);
    r.extend_from_slice(&lun);
    r.extend_from_slice(&tag.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0]); // task_attr SIMPLE, prio, crn
    let mut c = [0u8; 32];
    c[..cdb.len()].copy_from_slice(cdb);
    r.extend_from_slice(&c);
    r
}

/// A decoded `virtio_scsi_cmd_resp`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resp {
    pub sense_len: u32,
    pub resid: u32,
    pub status_qualifier: u16,
    pub status: u8,
    pub response: u8,
    pub sense: Vec<u8>,
}

pub(crate) fn read_resp(mem: &GuestMemoryMmap, addr: u64) -> Resp {
    let mut b = [0u8; 12 + 96];
    mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
    let sense_len = u32::from_le_bytes(b[0..4].try_into().unwrap());
    Resp {
        sense_len,
        resid: u32::from_le_bytes(b[4..8].try_into().unwrap()),
        status_qualifier: u16::from_le_bytes(b[8..10].try_into().unwrap()),
        status: b[10],
        response: b[11],
        sense: b[12..12 + (sense_len as usize).min(96)].to_vec(),
    }
}

/// Fixed-format sense bytes for key/asc/ascq without INFORMATION or field pointer.
pub(crate) fn fixed_sense(key: u8, asc: u8, ascq: u8) -> [u8; 18] {
    let mut s = [0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}
