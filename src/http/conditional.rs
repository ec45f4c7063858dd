//! What a download request gets: the RFC 9110 conditional request (§13) and
//! range (§14) rules, decided from the method, the request's headers and the
//! file's validators alone, so that every rule is unit-tested without a server.
//!
//! Choices within what RFC 9110 allows, and the contract in `docs/API.md`:
//! - One range only. A request for several ranges gets the whole file (200):
//!   a server MAY ignore `Range` (§14.2), and no client of ours needs
//!   `multipart/byteranges`.
//! - `Range` is ignored (200) when it is malformed or in a unit other than
//!   `bytes`, on `HEAD` (§14.2: range handling is defined for `GET` only), and
//!   on a zero-length file, which has no byte to point at.
//! - 416 only for a well-formed single range that selects no byte: a first
//!   position at or past the end, or the suffix `-0`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, EntityTag, HeaderMap, HeaderName, HttpDate};
use actix_web::http::Method;

/// What the decision needs to know about the file.
#[derive(Debug, Clone)]
pub struct Validators {
    /// The file's length in bytes.
    pub len: u64,
    /// A strong entity tag that changes whenever the bytes do.
    pub etag: EntityTag,
    /// Modification time, whole seconds (see [`http_time`]); `None` when the
    /// file system cannot tell, and then date conditions are ignored.
    pub last_modified: Option<SystemTime>,
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end` of the file (both within it).
    Partial { start: u64, end: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 412: an `If-Match` or `If-Unmodified-Since` condition is false.
    PreconditionFailed,
    /// 416: the single range asked for selects no byte of the file.
    RangeNotSatisfiable,
}

/// `t` truncated to whole seconds: what an HTTP-date can say, so that a
/// date sent back by a client compares equal to the one it was given.
pub fn http_time(t: SystemTime) -> Option<SystemTime> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The answer to `method` with `headers` for the file described by `file`,
/// evaluating preconditions in the order of RFC 9110 §13.2.2.
pub fn decide(method: &Method, headers: &HeaderMap, file: &Validators) -> Answer {
    let get_or_head = method == Method::GET || method == Method::HEAD;

    // Steps 1 and 2: If-Match, else If-Unmodified-Since.
    if let Some(value) = field(headers, &header::IF_MATCH) {
        if !if_match(&value, &file.etag) {
            return Answer::PreconditionFailed;
        }
    } else if let (Some(value), Some(modified)) = (
        field(headers, &header::IF_UNMODIFIED_SINCE),
        file.last_modified,
    ) {
        // An invalid date is ignored (§13.1.4).
        if date(&value).is_some_and(|since| modified > since) {
            return Answer::PreconditionFailed;
        }
    }

    // Steps 3 and 4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if let Some(value) = field(headers, &header::IF_NONE_MATCH) {
        if if_none_match_hits(&value, &file.etag) {
            return if get_or_head {
                Answer::NotModified
            } else {
                Answer::PreconditionFailed
            };
        }
    } else if let (true, Some(value), Some(modified)) = (
        get_or_head,
        field(headers, &header::IF_MODIFIED_SINCE),
        file.last_modified,
    ) {
        if date(&value).is_some_and(|since| modified <= since) {
            return Answer::NotModified;
        }
    }

    // Step 5: Range, guarded by If-Range.
    if method != Method::GET || file.len == 0 {
        return Answer::Full;
    }
    let Some(range) = field(headers, &header::RANGE) else {
        return Answer::Full;
    };
    if let Some(value) = field(headers, &header::IF_RANGE) {
        if !if_range(&value, file) {
            return Answer::Full;
        }
    }
    match single_range(&range, file.len) {
        RangeSpec::Ignored => Answer::Full,
        RangeSpec::Unsatisfiable => Answer::RangeNotSatisfiable,
        RangeSpec::Bytes { start, end } => Answer::Partial { start, end },
    }
}

/// A field's value, its lines joined as one list (RFC 9110 §5.3). A line
/// that is not visible ASCII reads as empty: it can match no validator and
/// is no valid date or range, so it errs on the side of the full answer or,
/// for `If-Match`, of refusing.
fn field(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// A single HTTP-date; anything else (a list, garbage) is `None`.
fn date(value: &str) -> Option<SystemTime> {
    value.trim().parse::<HttpDate>().ok().map(SystemTime::from)
}

/// The entity tags of a `#entity-tag` list. Splitting at commas is safe for
/// our purpose: a tag that contains a comma cannot equal ours (hex digits),
/// and its halves do not parse as tags, so they are dropped.
fn etags(value: &str) -> impl Iterator<Item = EntityTag> + '_ {
    value
        .split(',')
        .filter_map(|t| t.trim_matches([' ', '\t']).parse().ok())
}

/// §13.1.1: true for `*` (the file exists) or a strongly matching tag.
fn if_match(value: &str, ours: &EntityTag) -> bool {
    value.trim() == "*" || etags(value).any(|t| t.strong_eq(ours))
}

/// §13.1.2: does the client already hold this file (`*` or a weakly
/// matching tag)? Then the condition is false.
fn if_none_match_hits(value: &str, ours: &EntityTag) -> bool {
    value.trim() == "*" || etags(value).any(|t| t.weak_eq(ours))
}

/// §13.1.5: the range applies only if the client's copy is this very file:
/// a strongly matching tag, or exactly our Last-Modified date.
fn if_range(value: &str, file: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value
            .parse::<EntityTag>()
            .is_ok_and(|t| t.strong_eq(&file.etag));
    }
    matches!((date(value), file.last_modified), (Some(d), Some(m)) if d == m)
}

/// What a `Range` value asks of a file of `len` (> 0) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole file: another unit, malformed, or several ranges.
    Ignored,
    Unsatisfiable,
    /// Bytes `start..=end`, clamped to the file.
    Bytes {
        start: u64,
        end: u64,
    },
}

/// A strict parser for one `bytes` range (§14.1.1). Hand-rolled rather than
/// `http-range-header` because that crate answers a malformed value and an
/// unsatisfiable one with the same error, and refuses a suffix longer than
/// the file, while RFC 9110 wants the first ignored, the second a 416 and the
/// third the whole file.
fn single_range(value: &str, len: u64) -> RangeSpec {
    let Some((unit, set)) = value.split_once('=') else {
        return RangeSpec::Ignored;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeSpec::Ignored;
    }
    // Empty list elements do not count (§5.6.1): `bytes=0-9,` is one range.
    let mut specs = set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeSpec::Ignored;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Ignored;
    };
    if first.is_empty() {
        // suffix-range: the last `n` bytes, or all of a shorter file.
        return match number(last) {
            None => RangeSpec::Ignored,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return RangeSpec::Ignored;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            // A last position before the first makes the range invalid.
            _ => return RangeSpec::Ignored,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes {
        start,
        end: end.min(len - 1),
    }
}

/// `1*DIGIT`; a value beyond u64 saturates, which is past any file's end.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    const TAG: &str = "\"abc123\"";

    fn file(len: u64) -> Validators {
        Validators {
            len,
            etag: TAG.parse().unwrap(),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        }
    }

    /// The file's Last-Modified, and one second either side, as HTTP-dates.
    fn dates() -> (String, String, String) {
        let m = file(1).last_modified.unwrap();
        let fmt = |t: SystemTime| HttpDate::from(t).to_string();
        (
            fmt(m - Duration::from_secs(1)),
            fmt(m),
            fmt(m + Duration::from_secs(1)),
        )
    }

    fn with(method: Method, pairs: &[(&str, &str)], len: u64) -> Answer {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        decide(&method, &headers, &file(len))
    }

    fn get(pairs: &[(&str, &str)]) -> Answer {
        with(Method::GET, pairs, 1000)
    }

    fn range(value: &str, len: u64) -> Answer {
        with(Method::GET, &[("range", value)], len)
    }

    fn part(start: u64, end: u64) -> Answer {
        Answer::Partial { start, end }
    }

    #[test]
    fn no_conditions_and_no_range_is_the_whole_file() {
        assert_eq!(get(&[]), Answer::Full);
        assert_eq!(with(Method::HEAD, &[], 0), Answer::Full);
    }

    #[test]
    fn single_ranges_are_clamped_to_the_file() {
        assert_eq!(range("bytes=10-99", 1000), part(10, 99));
        assert_eq!(range("bytes=0-0", 1000), part(0, 0));
        assert_eq!(range("bytes=990-", 1000), part(990, 999));
        assert_eq!(range("bytes=990-5000", 1000), part(990, 999));
        assert_eq!(range("bytes=-10", 1000), part(990, 999));
        // A suffix longer than the file is the whole file, as a 206.
        assert_eq!(range("bytes=-5000", 1000), part(0, 999));
        assert_eq!(range("bytes=999-999", 1000), part(999, 999));
        assert_eq!(range("bytes=0-99999999999999999999999", 1000), part(0, 999));
    }

    #[test]
    fn the_unit_is_case_insensitive_and_list_whitespace_is_allowed() {
        assert_eq!(range("Bytes=1-2", 1000), part(1, 2));
        assert_eq!(range("bytes= 1-2 ,", 1000), part(1, 2));
        assert_eq!(range("bytes=,1-2", 1000), part(1, 2));
    }

    #[test]
    fn ranges_selecting_no_byte_are_unsatisfiable() {
        assert_eq!(range("bytes=1000-", 1000), Answer::RangeNotSatisfiable);
        assert_eq!(range("bytes=1000-2000", 1000), Answer::RangeNotSatisfiable);
        assert_eq!(range("bytes=700000-", 1000), Answer::RangeNotSatisfiable);
        assert_eq!(range("bytes=-0", 1000), Answer::RangeNotSatisfiable);
        assert_eq!(
            range("bytes=99999999999999999999999-", 1000),
            Answer::RangeNotSatisfiable
        );
    }

    #[test]
    fn malformed_ranges_and_other_units_are_ignored() {
        for value in [
            "items=0-1",
            "bytes=abc",
            "bytes=",
            "bytes",
            "bytes=5",
            "bytes=5-1",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=-+5",
            "bytes=0x10-20",
            "bytes =0-1",
            "bytes=1 - 2",
            "",
        ] {
            assert_eq!(range(value, 1000), Answer::Full, "{value:?}");
        }
    }

    #[test]
    fn several_ranges_get_the_whole_file() {
        assert_eq!(range("bytes=0-1,5-6", 1000), Answer::Full);
        assert_eq!(range("bytes=0-1, 0-1", 1000), Answer::Full);
        // Even when none of them is satisfiable: ignoring is allowed.
        assert_eq!(range("bytes=5000-,6000-", 1000), Answer::Full);
        // Two Range lines are one list of two.
        assert_eq!(
            get(&[("range", "bytes=0-1"), ("range", "bytes=5-6")]),
            Answer::Full
        );
    }

    #[test]
    fn a_zero_length_file_ignores_any_range() {
        for value in ["bytes=-1", "bytes=0-0", "bytes=0-", "bytes=-0", "bytes=5-"] {
            assert_eq!(range(value, 0), Answer::Full, "{value:?}");
        }
    }

    #[test]
    fn head_ignores_range() {
        assert_eq!(
            with(Method::HEAD, &[("range", "bytes=0-1")], 10),
            Answer::Full
        );
        assert_eq!(
            with(Method::HEAD, &[("range", "bytes=50-")], 10),
            Answer::Full
        );
    }

    #[test]
    fn if_match_needs_a_strong_match() {
        assert_eq!(get(&[("if-match", TAG)]), Answer::Full);
        assert_eq!(get(&[("if-match", "*")]), Answer::Full);
        assert_eq!(get(&[("if-match", "\"x\", \"abc123\"")]), Answer::Full);
        assert_eq!(get(&[("if-match", "\"zzz\"")]), Answer::PreconditionFailed);
        assert_eq!(
            get(&[("if-match", "W/\"abc123\"")]),
            Answer::PreconditionFailed
        );
        assert_eq!(get(&[("if-match", "garbage")]), Answer::PreconditionFailed);
    }

    #[test]
    fn if_unmodified_since_compares_dates_and_yields_to_if_match() {
        let (before, at, after) = dates();
        assert_eq!(
            get(&[("if-unmodified-since", &before)]),
            Answer::PreconditionFailed
        );
        assert_eq!(get(&[("if-unmodified-since", &at)]), Answer::Full);
        assert_eq!(get(&[("if-unmodified-since", &after)]), Answer::Full);
        assert_eq!(get(&[("if-unmodified-since", "yesterday")]), Answer::Full);
        assert_eq!(
            get(&[("if-match", TAG), ("if-unmodified-since", &before)]),
            Answer::Full
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert_eq!(get(&[("if-none-match", TAG)]), Answer::NotModified);
        assert_eq!(
            get(&[("if-none-match", "W/\"abc123\"")]),
            Answer::NotModified
        );
        assert_eq!(get(&[("if-none-match", "*")]), Answer::NotModified);
        assert_eq!(
            get(&[("if-none-match", "\"a\", \"abc123\"")]),
            Answer::NotModified
        );
        assert_eq!(get(&[("if-none-match", "\"zzz\"")]), Answer::Full);
        assert_eq!(
            with(Method::HEAD, &[("if-none-match", TAG)], 1000),
            Answer::NotModified
        );
        // For other methods a hit is a failed precondition.
        assert_eq!(
            with(Method::DELETE, &[("if-none-match", TAG)], 1000),
            Answer::PreconditionFailed
        );
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_if_none_match() {
        let (before, at, after) = dates();
        assert_eq!(get(&[("if-modified-since", &before)]), Answer::Full);
        assert_eq!(get(&[("if-modified-since", &at)]), Answer::NotModified);
        assert_eq!(get(&[("if-modified-since", &after)]), Answer::NotModified);
        assert_eq!(get(&[("if-modified-since", "soon")]), Answer::Full);
        assert_eq!(
            get(&[("if-none-match", "\"zzz\""), ("if-modified-since", &at)]),
            Answer::Full
        );
        assert_eq!(
            with(Method::DELETE, &[("if-modified-since", &at)], 1000),
            Answer::Full
        );
    }

    #[test]
    fn failed_if_match_wins_over_if_none_match_and_range() {
        assert_eq!(
            get(&[
                ("if-match", "\"zzz\""),
                ("if-none-match", TAG),
                ("range", "bytes=0-1")
            ]),
            Answer::PreconditionFailed
        );
        // 304 wins over a range, even an unsatisfiable one.
        assert_eq!(
            get(&[("if-none-match", TAG), ("range", "bytes=5000-")]),
            Answer::NotModified
        );
    }

    #[test]
    fn if_range_applies_the_range_only_to_the_same_file() {
        let (before, at, _) = dates();
        let r = ("range", "bytes=0-9");
        assert_eq!(get(&[r, ("if-range", TAG)]), part(0, 9));
        assert_eq!(get(&[r, ("if-range", "\"zzz\"")]), Answer::Full);
        assert_eq!(get(&[r, ("if-range", "W/\"abc123\"")]), Answer::Full);
        assert_eq!(get(&[r, ("if-range", &at)]), part(0, 9));
        assert_eq!(get(&[r, ("if-range", &before)]), Answer::Full);
        assert_eq!(get(&[r, ("if-range", "garbage")]), Answer::Full);
        // A mismatch also spares the client a 416 for a range of an old copy.
        assert_eq!(
            get(&[("range", "bytes=5000-"), ("if-range", "\"zzz\"")]),
            Answer::Full
        );
        // Without Range, If-Range means nothing.
        assert_eq!(get(&[("if-range", "\"zzz\"")]), Answer::Full);
    }

    #[test]
    fn without_a_modification_time_date_conditions_are_ignored() {
        let (before, at, _) = dates();
        let mut f = file(1000);
        f.last_modified = None;
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_UNMODIFIED_SINCE, before.parse().unwrap());
        headers.insert(header::IF_MODIFIED_SINCE, at.parse().unwrap());
        assert_eq!(decide(&Method::GET, &headers, &f), Answer::Full);
        headers.insert(header::RANGE, "bytes=0-1".parse().unwrap());
        headers.insert(header::IF_RANGE, at.parse().unwrap());
        assert_eq!(decide(&Method::GET, &headers, &f), Answer::Full);
    }

    #[test]
    fn http_time_drops_the_fraction_of_a_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(
            http_time(t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}
