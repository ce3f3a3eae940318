//! When to try an LLM call again: exponential backoff with jitter, and the
//! `Retry-After` header (delay-seconds or an HTTP date).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// No backoff waits longer than this (a `Retry-After` may ask for more).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry number `retry` (1 for the first retry):
/// `base_ms * 2^(retry-1)`, capped at [`MAX_BACKOFF`], plus up to 10 % jitter
/// so that agents rate-limited together do not retry in lockstep.
pub(crate) fn backoff(base_ms: u64, retry: u32) -> Duration {
    let doubling = retry.saturating_sub(1).min(20);
    let exp = base_ms
        .saturating_mul(1u64 << doubling)
        .min(MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(exp + jitter(exp / 10))
}

/// A random number in `0..=max`. `RandomState` is seeded randomly per
/// process and changes per instance, which is all the randomness jitter needs.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    RandomState::new().hash_one(max) % (max + 1)
}

/// How long a `Retry-After` header value asks to wait, measured from `now`:
/// either whole seconds (`"120"`) or an HTTP date
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`; a date in the past means no wait).
/// `None` when the value is neither, so the caller falls back to backoff.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch of an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to
/// use. The obsolete RFC 850 and asctime forms are not accepted.
fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    Some(days_since_epoch(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's
/// `days_from_civil`, restricted to dates from 1970 on).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after(" 7 ", SystemTime::now()),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_http_date() {
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_http_date(date), Some(784_111_777));
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(7)));
        let later = UNIX_EPOCH + Duration::from_secs(784_111_999);
        assert_eq!(parse_retry_after(date, later), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        for bad in [
            "",
            "soon",
            "-1",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, SystemTime::now()), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let first = backoff(100, 1).as_millis();
        let third = backoff(100, 3).as_millis();
        assert!((100..=110).contains(&first), "{first}");
        assert!((400..=440).contains(&third), "{third}");
        assert!(backoff(100, 40) <= MAX_BACKOFF + MAX_BACKOFF / 10);
        assert_eq!(backoff(0, 5), Duration::ZERO);
    }
}
