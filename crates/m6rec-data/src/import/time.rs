//! Event times as exports write them: epoch seconds or milliseconds, ISO-8601 date-times (with or without an offset)
//! and plain dates, all read to milliseconds since the epoch (UTC; a time without an offset is taken as UTC).

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// How a numeric time is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Seconds below 10¹¹ (until the year 5138), milliseconds from there (from March 1973 on): the two meet nowhere
    /// a real log lives.
    #[default]
    Auto,
    /// Seconds since the epoch.
    Seconds,
    /// Milliseconds since the epoch.
    Milliseconds,
}

impl std::str::FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TimeUnit::Auto),
            "s" | "seconds" => Ok(TimeUnit::Seconds),
            "ms" | "milliseconds" => Ok(TimeUnit::Milliseconds),
            _ => Err(format!("unknown time unit `{s}`: expected auto, s or ms")),
        }
    }
}

/// Milliseconds since the epoch ± 2¹⁵ years: far beyond any log, and safe to subtract.
const LIMIT_MS: i64 = 1_000_000_000_000_000;

/// `text` as milliseconds since the epoch, or why it is not a time.
pub fn parse_time_ms(text: &str, unit: TimeUnit) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if let Ok(v) = s.parse::<f64>() {
        if s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
            return numeric(v, unit).ok_or_else(|| format!("time `{s}` is out of range"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.timestamp_millis());
        }
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(t.and_utc().timestamp_millis());
            }
        }
    }
    Err(format!(
        "time `{s}` is neither epoch seconds/milliseconds nor an ISO-8601 date-time (2024-03-01T12:00:00Z) or date \
         (2024-03-01)"
    ))
}

fn numeric(v: f64, unit: TimeUnit) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let ms = match unit {
        TimeUnit::Seconds => v * 1000.0,
        TimeUnit::Milliseconds => v,
        TimeUnit::Auto if v.abs() < 1e11 => v * 1000.0,
        TimeUnit::Auto => v,
    };
    (ms.abs() < LIMIT_MS as f64).then(|| ms.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_reads_to_the_same_instant() {
        let want = 1_709_294_400_000; // 2024-03-01T12:00:00Z
        for s in [
            "1709294400",
            "1709294400000",
            "1709294400.0",
            "2024-03-01T12:00:00Z",
            "2024-03-01T12:00:00+00:00",
            "2024-03-01T13:00:00+01:00",
            "2024-03-01 12:00:00",
            "2024-03-01T12:00:00.000",
            "2024-03-01T12:00",
        ] {
            assert_eq!(parse_time_ms(s, TimeUnit::Auto), Ok(want), "{s}");
        }
        assert_eq!(parse_time_ms("2024-03-01", TimeUnit::Auto), Ok(want - 12 * 3_600_000));
        assert_eq!(parse_time_ms("2024/03/01", TimeUnit::Auto), parse_time_ms("2024-03-01", TimeUnit::Auto));
        assert_eq!(parse_time_ms("1500", TimeUnit::Milliseconds), Ok(1500));
        assert_eq!(parse_time_ms("1.5", TimeUnit::Seconds), Ok(1500));
    }

    #[test]
    fn what_is_not_a_time_says_so() {
        for s in ["", "yesterday", "2024-13-01", "NaN", "1e300", "12:00"] {
            assert!(parse_time_ms(s, TimeUnit::Auto).is_err(), "{s:?}");
        }
        let e = parse_time_ms("next week", TimeUnit::Auto).unwrap_err();
        assert!(e.contains("next week") && e.contains("ISO-8601"), "{e}");
    }
}
