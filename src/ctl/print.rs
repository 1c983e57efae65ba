//! Text forms of the API's answers (`--json` prints the answers themselves).

use std::fmt::Write;

use oxvm_api::control::{
    ActionReply, Counters, MigrationStatus, SnapshotInfo, SnapshotList, VersionInfo, VmInfo,
};

pub(crate) fn state(reply: &ActionReply) -> String {
    format!("{}\n", reply.state)
}

pub(crate) fn migration(m: &MigrationStatus) -> String {
    let phase = serde_json::to_value(m.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = format!(
        "phase {phase}, round {}, {} pages / {} MiB sent of {} pages, {} left",
        m.iteration,
        m.pages_sent,
        m.bytes_sent >> 20,
        m.total_pages,
        m.remaining_pages
    );
    if let Some(d) = m.downtime_ms {
        let _ = write!(out, ", downtime {d} ms");
    }
    if let Some(e) = &m.error {
        let _ = write!(out, ", error: {e}");
    }
    out.push('\n');
    out
}

/// How long ago a snapshot was taken, in `uptime`'s short form.
fn age(created_unix_ms: u64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secs = now_ms.saturating_sub(created_unix_ms) as f64 / 1000.0;
    format!("{} ago", uptime(Some(secs)))
}

fn snapshot_row(s: &SnapshotInfo) -> Vec<String> {
    let layers = s
        .disks
        .iter()
        .map(|d| match &d.layer {
            Some(l) => format!("{}={}", d.id, l.display()),
            None => format!("{}=(read-only)", d.id),
        })
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        s.name.clone(),
        age(s.created_unix_ms),
        s.vm_state.to_string(),
        if layers.is_empty() {
            "-".into()
        } else {
            layers
        },
        s.description.clone().unwrap_or_default(),
    ]
}

const SNAPSHOT_HEAD: [&str; 5] = ["NAME", "CREATED", "VM STATE", "DISK LAYERS", "DESCRIPTION"];

pub(crate) fn snapshot(s: &SnapshotInfo) -> String {
    table(&SNAPSHOT_HEAD, vec![snapshot_row(s)])
}

pub(crate) fn snapshots(l: &SnapshotList) -> String {
    if l.snapshots.is_empty() {
        return "no snapshots\n".to_string();
    }
    table(
        &SNAPSHOT_HEAD,
        l.snapshots.iter().map(snapshot_row).collect(),
    )
}

pub(crate) fn version(v: &VersionInfo) -> String {
    format!(
        "oxvm {} (API v{}); this oxvm ctl is {}\n",
        v.version,
        v.api,
        env!("CARGO_PKG_VERSION")
    )
}

pub(crate) fn info(i: &VmInfo) -> String {
    let vcpus = if i.vcpu_threads.is_empty() {
        "-".to_string()
    } else {
        i.vcpu_threads
            .iter()
            .map(|t| format!("vcpu{}={}", t.index, t.tid))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rows = [
        ("name", i.name.clone().unwrap_or_else(|| "-".to_string())),
        ("state", i.state.to_string()),
        ("pid", i.pid.to_string()),
        ("uptime", uptime(i.uptime_s)),
        ("boots", i.boots.to_string()),
        ("vcpu tids", vcpus),
        (
            "last error",
            i.last_error.clone().unwrap_or_else(|| "-".to_string()),
        ),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<11} {v}", format!("{k}:"));
    }
    out
}

/// `3d04h`, `2h05m`, `4m07s`, `12s`; `-` before the first boot.
pub(crate) fn uptime(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".to_string();
    };
    let s = s.max(0.0) as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

pub(crate) fn counters(c: &Counters) -> String {
    let mut out = String::new();
    if !c.disks.is_empty() {
        let rows = c.disks.iter().map(|(id, d)| {
            let n = [
                d.read_ops,
                d.read_bytes,
                d.write_ops,
                d.write_bytes,
                d.flush_ops,
                d.discard_ops,
                d.errors,
            ];
            std::iter::once(id.clone())
                .chain(n.iter().map(u64::to_string))
                .collect()
        });
        let head = [
            "DISK", "READS", "READ_B", "WRITES", "WRITE_B", "FLUSHES", "DISCARDS", "ERRORS",
        ];
        out += &table(&head, rows.collect());
        out.push('\n');
    }
    if !c.nics.is_empty() {
        let rows = c.nics.iter().map(|(id, n)| {
            let v = [
                n.rx_packets,
                n.rx_bytes,
                n.tx_packets,
                n.tx_bytes,
                n.rx_dropped,
                n.tx_dropped,
            ];
            std::iter::once(id.clone())
                .chain(v.iter().map(u64::to_string))
                .collect()
        });
        let head = [
            "NIC", "RX_PKTS", "RX_B", "TX_PKTS", "TX_B", "RX_DROP", "TX_DROP",
        ];
        out += &table(&head, rows.collect());
        out.push('\n');
    }
    if !c.vcpus.is_empty() {
        let rows = c.vcpus.iter().map(|v| {
            let exits: Vec<String> = v.exits.iter().map(|(k, n)| format!("{k}={n}")).collect();
            vec![v.index.to_string(), exits.join(" ")]
        });
        out += &table(&["VCPU", "EXITS"], rows.collect());
        out.push('\n');
    }
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let _ = writeln!(
        out,
        "memory: guest {}, host RSS {}",
        mib(c.memory.guest_bytes),
        mib(c.memory.host_rss_bytes)
    );
    out
}

/// Columns as wide as their widest cell; the last column is not padded.
pub(crate) fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_are_short() {
        assert_eq!(uptime(None), "-");
        assert_eq!(uptime(Some(12.7)), "12s");
        assert_eq!(uptime(Some(247.0)), "4m07s");
        assert_eq!(uptime(Some(7500.0)), "2h05m");
        assert_eq!(uptime(Some(273_600.0)), "3d04h");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "PID", "STATE"],
            vec![
                vec!["web-server".into(), "7".into(), "running".into()],
                vec!["db".into(), "12345".into(), "paused".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        PID    STATE\nweb-server  7      running\ndb          12345  paused\n"
        );
    }
}
