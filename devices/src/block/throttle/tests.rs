use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use oxvm_api::IoTune;

use super::*;
use crate::block::{DiskBackend, MemDisk};

const MIB: u64 = 1 << 20;

fn fake(tune: &IoTune) -> (Throttle, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::default());
    let t = Throttle::with_clock(tune, clock.clone()).unwrap().unwrap();
    (t, clock)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[test]
fn nothing_limited_is_no_throttle() {
    assert!(Throttle::new(&IoTune::default()).unwrap().is_none());
}

#[test]
fn write_bandwidth_limit_delays_four_mib_by_three_seconds() {
    let tune = IoTune {
        write_bytes_sec: MIB,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    for _ in 0..64 {
        t.admit(IoDirection::Write, 64 * 1024);
    }
    // 4 MiB at 1 MiB/s with a 0.1 MiB initial allowance: 3.9 s minus the last request's
    // debt, which only the next request pays.
    let slept = secs(clock.slept());
    assert!(slept >= 3.0, "slept {slept}");
    assert!(slept < 4.0, "slept {slept}");
    assert_eq!(clock.slept(), t.waited());

    // The next request pays the outstanding debt.
    t.admit(IoDirection::Write, 512);
    let slept = secs(clock.slept());
    assert!((slept - 3.9).abs() < 0.01, "slept {slept}");
}

#[test]
fn one_large_request_is_not_stuck_and_the_next_one_pays() {
    let tune = IoTune {
        total_bytes_sec: MIB,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    t.admit(IoDirection::Read, 8 * MIB);
    assert_eq!(clock.slept(), Duration::ZERO);
    t.admit(IoDirection::Write, 4096);
    let slept = secs(clock.slept());
    assert!((slept - 7.9).abs() < 0.01, "slept {slept}");
}

#[test]
fn read_limit_does_not_slow_writes() {
    let tune = IoTune {
        read_bytes_sec: MIB,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    for _ in 0..100 {
        t.admit(IoDirection::Write, MIB);
    }
    assert_eq!(clock.slept(), Duration::ZERO);
    t.admit(IoDirection::Read, MIB);
    t.admit(IoDirection::Read, MIB);
    assert!(secs(clock.slept()) >= 0.89);
}

#[test]
fn burst_runs_at_max_rate_for_max_length_then_falls_back() {
    // 1 MiB/s sustained; bursts at 10 MiB/s for up to 2 s (a 20 MiB bucket).
    let tune = IoTune {
        write_bytes_sec: MIB,
        write_bytes_sec_max: 10 * MIB,
        write_bytes_sec_max_length: 2,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    let mut written = 0;
    while written < 15 * MIB {
        t.admit(IoDirection::Write, 256 * 1024);
        written += 256 * 1024;
    }
    // 15 MiB at about the burst rate (10 MiB/s, topped up by 1 MiB/s): ~1.4 s, far below
    // the 15 s the sustained rate alone would take.
    let burst = secs(clock.slept());
    assert!(burst > 1.0 && burst < 2.0, "burst took {burst}");

    // Drain the rest of the bucket, then the rate is back to 1 MiB/s.
    while written < 40 * MIB {
        t.admit(IoDirection::Write, 256 * 1024);
        written += 256 * 1024;
    }
    let before = clock.slept();
    for _ in 0..8 {
        t.admit(IoDirection::Write, 256 * 1024);
    }
    let sustained = secs(clock.slept() - before);
    assert!((sustained - 2.0).abs() < 0.05, "2 MiB took {sustained}");

    // After a long idle time the whole burst is available again.
    clock.advance(Duration::from_secs(100));
    let before = clock.slept();
    for _ in 0..8 {
        t.admit(IoDirection::Write, 256 * 1024);
    }
    let again = secs(clock.slept() - before);
    assert!(again < 0.25, "2 MiB after idle took {again}");
}

#[test]
fn without_burst_length_the_max_is_the_bucket_size() {
    // bps_max without a length: up to 4 MiB may go at once, then 1 MiB/s.
    let tune = IoTune {
        total_bytes_sec: MIB,
        total_bytes_sec_max: 4 * MIB,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    for _ in 0..16 {
        t.admit(IoDirection::Read, 256 * 1024);
    }
    assert!(secs(clock.slept()) < 0.3);
    for _ in 0..4 {
        t.admit(IoDirection::Read, 256 * 1024);
    }
    assert!(secs(clock.slept()) >= 0.7);
}

#[test]
fn iops_limit() {
    let tune = IoTune {
        total_iops_sec: 100,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    for _ in 0..1000 {
        t.admit(IoDirection::Read, 4096);
    }
    // 1000 ops at 100/s, 10 allowed at once, the last one's debt outstanding.
    let slept = secs(clock.slept());
    assert!((slept - 9.89).abs() < 0.05, "slept {slept}");
}

#[test]
fn write_iops_with_burst() {
    let tune = IoTune {
        write_iops_sec: 10,
        write_iops_sec_max: 100,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    for _ in 0..100 {
        t.admit(IoDirection::Write, 4096);
    }
    assert!(secs(clock.slept()) < 0.01);
    // The bucket is empty now: ten more take 0.9 s (the last one's debt outstanding).
    for _ in 0..10 {
        t.admit(IoDirection::Write, 4096);
    }
    let slept = secs(clock.slept());
    assert!((slept - 0.9).abs() < 0.01, "slept {slept}");
    // Reads are not limited.
    let before = clock.slept();
    for _ in 0..1000 {
        t.admit(IoDirection::Read, 4096);
    }
    assert_eq!(clock.slept(), before);
}

#[test]
fn size_iops_sec_counts_large_requests_as_several() {
    let tune = IoTune {
        total_iops_sec: 10,
        size_iops_sec: 4096,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    // Each 64 KiB request counts as 16 operations.
    for _ in 0..11 {
        t.admit(IoDirection::Write, 64 * 1024);
    }
    // 176 operations at 10/s with 1 allowed at once: the first starts at once, the
    // second waits 1.5 s, the other nine 1.6 s each.
    let slept = secs(clock.slept());
    assert!((slept - 15.9).abs() < 0.05, "slept {slept}");
}

#[test]
fn bandwidth_and_iops_both_apply() {
    let tune = IoTune {
        total_bytes_sec: 10 * MIB,
        total_iops_sec: 10,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    // Small requests: the IOPS limit dominates (one allowed at once, then 10/s).
    for _ in 0..11 {
        t.admit(IoDirection::Write, 512);
    }
    let slept = secs(clock.slept());
    assert!((slept - 0.9).abs() < 0.01, "slept {slept}");
}

#[test]
fn invalid_iotune_is_refused_with_field_names() {
    let err = |tune: IoTune| Throttle::new(&tune).unwrap_err().to_string();
    let msg = err(IoTune {
        total_bytes_sec: 1,
        read_bytes_sec: 1,
        ..Default::default()
    });
    assert!(
        msg.contains("total_bytes_sec") && msg.contains("read_bytes_sec"),
        "{msg}"
    );
    let msg = err(IoTune {
        write_iops_sec_max: 10,
        ..Default::default()
    });
    assert!(
        msg.contains("write_iops_sec_max requires iotune.write_iops_sec"),
        "{msg}"
    );
    let msg = err(IoTune {
        read_bytes_sec: 100,
        read_bytes_sec_max: 10,
        ..Default::default()
    });
    assert!(msg.contains("must not be lower"), "{msg}");
    let msg = err(IoTune {
        total_iops_sec: 100,
        total_iops_sec_max_length: 5,
        ..Default::default()
    });
    assert!(msg.contains("total_iops_sec_max_length requires"), "{msg}");
    let msg = err(IoTune {
        total_iops_sec: u64::MAX,
        ..Default::default()
    });
    assert!(msg.contains("too large"), "{msg}");
}

#[test]
fn cancel_cuts_a_real_wait_short() {
    // 1 byte/s: the second request would wait about a day.
    let tune = IoTune {
        total_bytes_sec: 1,
        ..Default::default()
    };
    let mut t = Throttle::new(&tune).unwrap().unwrap();
    let cancel = t.canceller();
    t.admit(IoDirection::Write, 100_000);
    let start = Instant::now();
    let waiter = thread::spawn(move || {
        t.admit(IoDirection::Write, 512);
        t
    });
    thread::sleep(Duration::from_millis(50));
    cancel.cancel();
    let t = waiter.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(t.waited() > Duration::ZERO);
    // While cancelled, nothing waits at all.
    let mut t = t;
    t.admit(IoDirection::Write, 512);
    cancel.reset();
    assert!(!cancel.is_cancelled());
}

#[test]
fn throttled_backend_forwards_io_and_exposes_its_canceller() {
    let tune = IoTune {
        total_iops_sec: 1000,
        ..Default::default()
    };
    let clock = Arc::new(FakeClock::default());
    let throttle = Throttle::with_clock(&tune, clock.clone()).unwrap().unwrap();
    let mut disk = Throttled::new(MemDisk::new(1 << 20), throttle);
    assert!(disk.wait_canceller().is_some());
    disk.admit(IoDirection::Write, 512);
    disk.write_at(512, &[7u8; 512]).unwrap();
    let mut buf = [0u8; 512];
    disk.read_at(512, &mut buf).unwrap();
    assert_eq!(buf, [7u8; 512]);
    assert_eq!(disk.size(), 1 << 20);
}

#[test]
fn try_admit_says_how_long_to_wait_and_accounts_only_once_admitted() {
    let tune = IoTune {
        total_bytes_sec: MIB,
        ..Default::default()
    };
    let (mut t, clock) = fake(&tune);
    // The first request fits and goes into debt; the next must wait it off.
    assert_eq!(t.try_admit(IoDirection::Write, 2 * MIB), Ok(()));
    let wait = t.try_admit(IoDirection::Read, 4096).unwrap_err();
    assert!((secs(wait) - 1.9).abs() < 0.01, "wait {wait:?}");
    // Asking again without time passing changes nothing (nothing was accounted).
    assert_eq!(t.try_admit(IoDirection::Read, 4096), Err(wait));
    assert_eq!(clock.slept(), Duration::ZERO, "try_admit never sleeps");
    clock.advance(wait);
    assert_eq!(t.try_admit(IoDirection::Read, 4096), Ok(()));
    // Cancelled waits admit at once, as in admit: deep debt does not hold anything.
    t.canceller().cancel();
    assert_eq!(t.try_admit(IoDirection::Write, 8 * MIB), Ok(()));
    assert_eq!(t.try_admit(IoDirection::Write, 8 * MIB), Ok(()));
}

#[test]
fn throttled_backend_try_admit_forwards_only_admitted_requests() {
    let tune = IoTune {
        total_iops_sec: 1,
        ..Default::default()
    };
    let clock = Arc::new(FakeClock::default());
    let t = Throttle::with_clock(&tune, clock.clone()).unwrap().unwrap();
    let mut disk = Throttled::new(MemDisk::new(4096), t);
    assert!(disk.try_admit(IoDirection::Read, 512).is_ok());
    let wait = disk.try_admit(IoDirection::Read, 512).unwrap_err();
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
    clock.advance(wait);
    assert!(disk.try_admit(IoDirection::Read, 512).is_ok());
    assert!(disk.native_io().is_none(), "a MemDisk has no file");
}
