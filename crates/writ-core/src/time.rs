//! Timestamps: microseconds since the Unix epoch, written as RFC 3339 UTC.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("{0:?} is not an RFC 3339 date-time (like 2026-11-24T10:00:00Z): {1}")]
    Parse(String, String),
    #[error("time out of range")]
    OutOfRange,
}

/// A point in time with microsecond precision, always shown in UTC as
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, the form audit entries are hashed in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp((nanos / 1000) as i64)
    }

    pub fn from_micros(micros: i64) -> Result<Self, TimestampError> {
        // Keep to years 0000..=9999 so that every timestamp has an RFC 3339 form.
        const MIN: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
        const MAX: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        if (MIN..=MAX).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses any RFC 3339 date-time (any offset) and converts it to UTC; precision below a
    /// microsecond is truncated.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let dt = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| TimestampError::Parse(s.to_owned(), e.to_string()))?;
        Self::from_micros((dt.unix_timestamp_nanos() / 1000) as i64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000)
            .map_err(|_| fmt::Error)?
            .to_offset(UtcOffset::UTC);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let cases: &[(&str, &str)] = &[
            ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00.000000Z"),
            ("2026-11-24T10:00:00.5+01:00", "2026-11-24T09:00:00.500000Z"),
            (
                "1970-01-01T00:00:00.0000019Z",
                "1970-01-01T00:00:00.000001Z",
            ),
            ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        ];
        for (input, shown) in cases {
            let t = Timestamp::parse(input).unwrap();
            assert_eq!(t.to_string(), *shown, "{input}");
            assert_eq!(Timestamp::parse(shown).unwrap(), t);
        }
        assert_eq!(Timestamp::from_micros(1).unwrap().as_micros(), 1);
        for bad in ["2026-11-24", "yesterday", "2026-11-24T25:00:00Z", ""] {
            let err = Timestamp::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not an RFC 3339"), "{bad}: {err}");
        }
        assert_eq!(
            Timestamp::from_micros(i64::MAX),
            Err(TimestampError::OutOfRange)
        );
    }
}
