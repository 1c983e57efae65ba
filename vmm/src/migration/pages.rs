//! Copying guest pages into and out of migration messages.

use vm_memory::{Bytes, GuestAddress};

use super::protocol::{pages_payload, write_frame, Tag, PAGE_SIZE};
use super::transport::Stream;
use super::MigrationError;
use oxvm_devices::virtio::GuestMemoryMmap;

/// Pages per `Pages` message: 1 MiB of data, large enough to keep the link busy.
const BATCH: usize = 256;

/// What sending a set of pages cost.
#[derive(Default, Clone, Copy)]
pub struct Sent {
    /// Pages read (zero or not).
    pub pages: u64,
    /// Pages sent with their data (not zero).
    pub data_pages: u64,
    pub bytes: u64,
    /// Seconds spent writing data messages to the connection (the rest of a round is
    /// reading pages and checking them for zeros).
    pub write_s: f64,
}

/// Send the pages at `gpas`: non-zero pages with their data, zero pages as a list
/// (unless `skip_zero`: the destination's fresh memory is zero already).
pub fn send_pages(
    stream: &mut dyn Stream,
    mem: &GuestMemoryMmap,
    gpas: &[u64],
    skip_zero: bool,
) -> Result<Sent, MigrationError> {
    let mut sent = Sent::default();
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(BATCH);
    let mut zeros: Vec<u8> = Vec::new();
    let flush = |stream: &mut dyn Stream,
                 batch: &mut Vec<(u64, Vec<u8>)>,
                 zeros: &mut Vec<u8>,
                 sent: &mut Sent|
     -> Result<(), MigrationError> {
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            let payload = pages_payload(batch);
            write_frame(stream, Tag::Pages, &payload)?;
            sent.write_s += started.elapsed().as_secs_f64();
            sent.bytes += payload.len() as u64 + 9;
            sent.data_pages += batch.len() as u64;
            batch.clear();
        }
        if !zeros.is_empty() {
            write_frame(stream, Tag::ZeroPages, zeros)?;
            sent.bytes += zeros.len() as u64 + 9;
            zeros.clear();
        }
        Ok(())
    };
    for &gpa in gpas {
        let mut page = vec![0u8; PAGE_SIZE];
        mem.read_slice(&mut page, GuestAddress(gpa))
            .map_err(|e| MigrationError::Vmm(format!("reading guest page {gpa:#x}: {e}")))?;
        sent.pages += 1;
        if page.iter().all(|&b| b == 0) {
            if !skip_zero {
                zeros.extend_from_slice(&gpa.to_le_bytes());
            }
        } else {
            batch.push((gpa, page));
        }
        if batch.len() >= BATCH || zeros.len() >= BATCH * 8 {
            flush(stream, &mut batch, &mut zeros, &mut sent)?;
        }
    }
    flush(stream, &mut batch, &mut zeros, &mut sent)?;
    Ok(sent)
}

/// Store received pages; a page outside guest memory is a protocol error.
pub fn store_pages(mem: &GuestMemoryMmap, pages: &[(u64, &[u8])]) -> Result<(), MigrationError> {
    for (gpa, data) in pages {
        mem.write_slice(data, GuestAddress(*gpa)).map_err(|e| {
            MigrationError::Protocol(format!("page {gpa:#x} is outside guest memory: {e}"))
        })?;
    }
    Ok(())
}

pub fn store_zero_pages(mem: &GuestMemoryMmap, gpas: &[u64]) -> Result<(), MigrationError> {
    let zero = [0u8; PAGE_SIZE];
    let pages: Vec<(u64, &[u8])> = gpas.iter().map(|&g| (g, &zero[..])).collect();
    store_pages(mem, &pages)
}

/// Every page of guest memory, by address.
pub fn all_pages(mem: &GuestMemoryMmap) -> Vec<u64> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter()
        .flat_map(|r| {
            let start = r.start_addr().0;
            (0..r.len() / PAGE_SIZE as u64).map(move |i| start + i * PAGE_SIZE as u64)
        })
        .collect()
}
