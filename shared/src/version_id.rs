//! Version ids: deterministic, fixed-width, and ordered like the uploads.
//!
//! A version id is derived only from the S3 event, so an event delivered twice
//! (S3 and SQS are at-least-once) names the same version and re-planning it is
//! harmless. The id reads `<UTC time to the ms>-<sequencer>-<hash>`:
//! - the event time orders versions of a dataset;
//! - the S3 `sequencer` (hex, right-padded with zeros as AWS prescribes for
//!   comparing sequencers of different lengths) breaks ties between events of
//!   the same millisecond; it is all zeros where the source omits it;
//! - a hash of bucket, key, ETag and sequencer keeps two uploads distinct when
//!   both are equal.
//!
//! Every field has a fixed width and an ASCII alphabet, so byte order of ids is
//! upload order. The flip script compares ids byte by byte for that reason.

use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

const SEQUENCER_WIDTH: usize = 32;
/// Length of every version id.
pub const VERSION_ID_LEN: usize = 19 + 1 + SEQUENCER_WIDTH + 1 + 8;

/// The parts of an S3 event that decide a version.
#[derive(Debug, Clone)]
pub struct VersionSource<'a> {
    pub event_time: &'a str,
    pub sequencer: Option<&'a str>,
    pub bucket: &'a str,
    pub key: &'a str,
    pub etag: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionIdError {
    #[error("event time {0:?} is not an RFC 3339 timestamp")]
    BadTime(String),
    #[error("sequencer {0:?} is not a hexadecimal string of at most {SEQUENCER_WIDTH} digits")]
    BadSequencer(String),
}

/// Derives the version id for an upload.
pub fn derive(src: &VersionSource<'_>) -> Result<String, VersionIdError> {
    let t = OffsetDateTime::parse(src.event_time, &Rfc3339)
        .map_err(|_| VersionIdError::BadTime(src.event_time.to_string()))?
        .to_offset(time::UtcOffset::UTC);
    let stamp = t
        .format(format_description!(
            "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
        ))
        .map_err(|_| VersionIdError::BadTime(src.event_time.to_string()))?;
    let seq = src.sequencer.unwrap_or("");
    if seq.len() > SEQUENCER_WIDTH || !seq.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VersionIdError::BadSequencer(seq.to_string()));
    }
    let mut seq = seq.to_ascii_uppercase();
    while seq.len() < SEQUENCER_WIDTH {
        seq.push('0');
    }
    let identity = format!("{}\n{}\n{}\n{}", src.bucket, src.key, src.etag, seq);
    let hash = crate::keys::fnv1a64(identity.as_bytes()) as u32;
    Ok(format!("{stamp}-{seq}-{hash:08x}"))
}

/// The upload's event time (ms since the epoch) encoded in a version id.
pub fn event_ms(version: &str) -> Option<u64> {
    let stamp = version.get(..19)?;
    let t = time::PrimitiveDateTime::parse(
        stamp,
        format_description!("[year][month][day]T[hour][minute][second][subsecond digits:3]Z"),
    )
    .ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as u64)
}

/// `ms` since the epoch as an RFC 3339 UTC time with milliseconds
/// (`2026-12-04T03:00:00.000Z`), the way the API shows times.
pub fn rfc3339_ms(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Whether `s` has the shape of a version id (for parameters from operators and URLs).
pub fn is_version_id(s: &str) -> bool {
    s.len() == VERSION_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_as_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_353_200_123), "2026-12-04T03:00:00.123Z");
    }

    fn src<'a>(time: &'a str, seq: Option<&'a str>, key: &'a str) -> VersionSource<'a> {
        VersionSource {
            event_time: time,
            sequencer: seq,
            bucket: "b",
            key,
            etag: "\"e\"",
        }
    }

    #[test]
    fn same_event_same_version() {
        let a = derive(&src(
            "2026-11-26T03:00:00.123Z",
            Some("0055AED6DCD90281E5"),
            "k",
        ))
        .unwrap();
        let b = derive(&src(
            "2026-11-26T03:00:00.123Z",
            Some("0055AED6DCD90281E5"),
            "k",
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), VERSION_ID_LEN);
        assert!(a.starts_with("20261126T030000123Z-0055AED6DCD90281E5"));
        assert!(is_version_id(&a));
        assert_eq!(event_ms(&a), Some(1_795_662_000_123));
    }

    #[test]
    fn later_events_order_after_earlier_ones() {
        let early = derive(&src("2026-11-26T03:00:00.999Z", None, "k")).unwrap();
        let late = derive(&src("2026-11-26T03:00:01Z", None, "k")).unwrap();
        assert!(late > early);
        // Other time zones are normalised to UTC before formatting.
        let tz = derive(&src("2026-11-26T04:00:02+01:00", None, "k")).unwrap();
        assert!(tz > late);
    }

    #[test]
    fn sequencer_breaks_ties_after_right_padding() {
        let t = "2026-11-26T03:00:00.000Z";
        let short = derive(&src(t, Some("0055AED6DCD90281E5"), "k")).unwrap();
        let longer = derive(&src(t, Some("0055AED6DCD90281E501"), "k")).unwrap();
        let bigger = derive(&src(t, Some("0055AED6DCD90281E6"), "k")).unwrap();
        assert!(longer > short);
        assert!(bigger > longer);
    }

    #[test]
    fn distinct_uploads_in_the_same_millisecond_differ() {
        let t = "2026-11-26T03:00:00.000Z";
        assert_ne!(
            derive(&src(t, None, "a")).unwrap(),
            derive(&src(t, None, "b")).unwrap()
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(derive(&src("yesterday", None, "k")).is_err());
        assert!(derive(&src("2026-11-26T03:00:00Z", Some("xyz"), "k")).is_err());
        assert!(!is_version_id("../etc"));
    }
}
