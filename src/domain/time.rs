//! Timestamps: Unix milliseconds inside, RFC 3339 UTC on the wire, read from a clock that a
//! wall-clock step cannot move.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// How far the wall clock may drift from the registry clock before it counts as a step.
const STEP_MS: i64 = 2_000;

/// The registry clock's origin: the wall clock and the boot clock, read together once.
struct Origin {
    wall_ms: i64,
    boot_ms: i64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();
/// The wall clock's offset from the registry clock when a step was last reported.
static REPORTED_STEP: AtomicI64 = AtomicI64::new(0);

/// Milliseconds of `CLOCK_BOOTTIME`: monotonic, counts suspend, never stepped.
fn boot_ms() -> i64 {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is available on Linux");
    t.tv_sec() * 1_000 + t.tv_nsec() / 1_000_000
}

impl Timestamp {
    /// The current time on the registry clock: the wall clock as it was when the process first
    /// asked, advanced since by the boot clock. Lease deadlines, backoffs and link expiries
    /// are all measured on it, so setting the system clock (by hand or by an NTP step) neither
    /// expires nor extends them. A step is logged once; the process keeps its own time until it
    /// restarts.
    pub fn now() -> Self {
        let origin = ORIGIN.get_or_init(|| Origin {
            wall_ms: Utc::now().timestamp_millis(),
            boot_ms: boot_ms(),
        });
        let now = origin.wall_ms + (boot_ms() - origin.boot_ms);
        let step = Utc::now().timestamp_millis() - now;
        let reported = REPORTED_STEP.load(Ordering::Relaxed);
        if (step - reported).abs() > STEP_MS
            && REPORTED_STEP
                .compare_exchange(reported, step, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if step.abs() <= STEP_MS {
                tracing::info!("the system clock agrees with taskyard's clock again");
            } else {
                tracing::warn!(
                    step_ms = step,
                    "the system clock is {:+.1}s off taskyard's clock; leases and timers keep \
                     their lengths, and timestamps follow taskyard's clock until it restarts",
                    step as f64 / 1_000.0
                );
            }
        }
        Self(now)
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// RFC 3339 with millisecond precision, e.g. `2026-11-22T03:42:21.000Z`.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Self(t.timestamp_millis()))
            .map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

/// A duration written as `30s`, `5m`, `2h`, `1d` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// Parses `30s`, `5m`, `2h`, `1d`, `500ms`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 2h or 1d"))?;
        let secs = match unit.trim() {
            "ms" => return Ok(Span(Duration::from_millis(n))),
            "" | "s" | "sec" | "secs" | "seconds" => n,
            "m" | "min" | "mins" | "minutes" => n * 60,
            "h" | "hour" | "hours" => n * 3_600,
            "d" | "day" | "days" => n * 86_400,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m, h or d"
                ))
            }
        };
        Ok(Span(Duration::from_secs(secs)))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(Span(Duration::from_secs(s))),
            Raw::Text(t) => Span::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            serializer.serialize_str(&format!("{ms}ms"))
        } else {
            serializer.serialize_str(&format!("{}s", ms / 1000))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(Span::parse("30s"), Ok(Span(Duration::from_secs(30))));
        assert_eq!(Span::parse("5m"), Ok(Span(Duration::from_secs(300))));
        assert_eq!(Span::parse("2h"), Ok(Span(Duration::from_secs(7_200))));
        assert_eq!(Span::parse("250ms"), Ok(Span(Duration::from_millis(250))));
        assert!(Span::parse("soon").is_err());
        assert!(Span::parse("5 fortnights").is_err());
    }

    #[test]
    fn renders_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_500).to_rfc3339(), "1970-01-01T00:00:01.500Z");
    }
}
