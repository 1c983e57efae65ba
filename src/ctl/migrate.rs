//! `oxvm ctl migrate`: one request that the source answers when the migration is over
//! (`wait: true`), while a second thread polls the progress and draws a bar on
//! stderr. The answer decides the outcome, so no poll can miss the end (the source
//! process exits right after answering).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oxvm_api::control::{MigrateParams, MigrationStatus};
use oxvm_api::Client;

use super::Failure;

const POLL: Duration = Duration::from_millis(200);

fn bar(s: &MigrationStatus) -> String {
    let total = s.total_pages.max(1);
    let done = s.pages_sent.min(total);
    let width = 30;
    let filled = (done * width / total) as usize;
    format!(
        "[{}{}] {:>3}% round {} | {} MiB sent | {} dirty pages/s | {} pages left | est. downtime {} ms",
        "#".repeat(filled),
        " ".repeat(width as usize - filled),
        done * 100 / total,
        s.iteration,
        s.bytes_sent >> 20,
        s.dirty_pages_per_s,
        s.remaining_pages,
        s.expected_downtime_ms
    )
}

/// Start the migration and wait for its end; draws progress when `draw`.
pub(crate) fn run(
    client: &Client,
    params: &MigrateParams,
    draw: bool,
) -> Result<MigrationStatus, Failure> {
    let done = Arc::new(AtomicBool::new(false));
    let progress = draw.then(|| {
        let (client, done) = (
            client.clone().with_timeout(Duration::from_secs(5)),
            done.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Ok(s) = client.migration_status() {
                    eprint!("\r{}", bar(&s));
                    let _ = std::io::stderr().flush();
                }
                std::thread::sleep(POLL);
            }
        })
    });
    let result = client.migrate_and_wait(params);
    done.store(true, Ordering::SeqCst);
    if let Some(t) = progress {
        let _ = t.join();
        eprintln!();
    }
    Ok(result?)
}
