//! UTC calendar time from a `SystemTime`, in pure Rust (no `gmtime_r`, no unsafe).

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down UTC time, as the RTC registers present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcTime {
    pub year: u64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 1..=7, Sunday = 1 (the MC146818 convention).
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl UtcTime {
    /// Times before 1970 (a badly set host clock) clamp to the epoch: the RTC cannot
    /// represent them meaningfully and the guest only needs something sane.
    pub fn from_system_time(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
            weekday: ((days + 4) % 7) as u8 + 1,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

/// Howard Hinnant's `civil_from_days` for non-negative day counts since 1970-01-01:
/// works in 400-year eras starting on March 1st so leap days fall at era ends.
fn civil_from_days(days: u64) -> (u64, u8, u8) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year
    let mp = (5 * doy + 2) / 153; // March = 0 .. February = 11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> UtcTime {
        UtcTime::from_system_time(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn known_dates() {
        assert_eq!(
            at(0),
            UtcTime {
                year: 1970,
                month: 1,
                day: 1,
                weekday: 5,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // Leap day of a 400-divisible year; a Tuesday.
        assert_eq!((at(951_782_400).year, at(951_782_400).month), (2000, 2));
        assert_eq!((at(951_782_400).day, at(951_782_400).weekday), (29, 3));
        assert_eq!(
            at(1_709_211_909),
            UtcTime {
                year: 2024,
                month: 2,
                day: 29,
                weekday: 5,
                hour: 13,
                minute: 5,
                second: 9
            }
        );
        assert_eq!(
            at(4_102_444_799),
            UtcTime {
                year: 2099,
                month: 12,
                day: 31,
                weekday: 5,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
    }

    #[test]
    fn before_epoch_clamps() {
        let t = UtcTime::from_system_time(UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(t, at(0));
    }

    /// Walk 600 years day by day against the plain Gregorian rules.
    #[test]
    fn consecutive_days_follow_the_calendar() {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y, m| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expect = (1970u64, 1u8, 1u8);
        for days in 0..600 * 366 {
            assert_eq!(civil_from_days(days), expect, "day {days}");
            let (y, m, d) = expect;
            expect = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
