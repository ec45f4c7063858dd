//! tus's request headers, read into plain values: `Upload-Metadata`,
//! `Upload-Checksum`, `Upload-Concat`, and the numbers. A header the
//! protocol does not allow is a 400 with a message naming it.

use actix_web::HttpRequest;
use base64::Engine;
use uuid::Uuid;

use crate::core::Error;
use crate::hashing::Algorithm;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A header as text, if present; one that is not visible ASCII is a 400.
pub fn text<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, Error> {
    req.headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| Error::InvalidRequest(format!("header {name} is not valid ASCII")))
        })
        .transpose()
}

/// A header holding a non-negative integer (`Upload-Offset`, `Upload-Length`).
pub fn number(req: &HttpRequest, name: &str) -> Result<Option<u64>, Error> {
    text(req, name)?
        .map(|v| {
            // Digits only: `+5` or ` 5` parse as u64 in Rust but not in tus.
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    Error::InvalidRequest(format!("{name} must be a non-negative integer"))
                })
        })
        .transpose()
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may
/// be missing). Returns each key with its decoded bytes, in order.
pub fn metadata(raw: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let bad = |why: String| Error::InvalidRequest(format!("Upload-Metadata: {why}"));
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    if raw.trim().is_empty() {
        return Ok(pairs);
    }
    for pair in raw.split(',') {
        let pair = pair.trim();
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || value.contains(' ') {
            return Err(bad(format!(
                "{pair:?} is not a key followed by one base64 value"
            )));
        }
        let value = B64
            .decode(value)
            .map_err(|_| bad(format!("the value of {key:?} is not base64")))?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(bad(format!("the key {key:?} is given twice")));
        }
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn checksum(raw: &str) -> Result<(Algorithm, Vec<u8>), Error> {
    let (name, value) = raw.split_once(' ').ok_or_else(|| {
        Error::InvalidRequest("Upload-Checksum must be `<algorithm> <base64 digest>`".into())
    })?;
    let algorithm = Algorithm::parse(name).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "checksum algorithm {name:?} is not supported; use one of {}",
            algorithms()
        ))
    })?;
    let digest = B64
        .decode(value.trim())
        .map_err(|_| Error::InvalidRequest("the Upload-Checksum digest is not base64".into()))?;
    Ok((algorithm, digest))
}

/// The algorithms `Tus-Checksum-Algorithm` announces.
pub fn algorithms() -> String {
    Algorithm::ALL.map(Algorithm::name).join(",")
}

/// What `Upload-Concat` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ConcatHeader {
    Partial,
    /// The partial uploads, as the URLs (or paths) the client named.
    Final(Vec<String>),
}

pub fn concat(raw: &str) -> Result<ConcatHeader, Error> {
    if raw == "partial" {
        return Ok(ConcatHeader::Partial);
    }
    match raw.strip_prefix("final;") {
        Some(urls) => Ok(ConcatHeader::Final(
            urls.split(' ')
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        None => Err(Error::InvalidRequest(
            "Upload-Concat must be `partial` or `final;<url> <url>...`".into(),
        )),
    }
}

/// The upload id at the end of a partial upload's URL, which must be one of
/// this endpoint's (`scope` followed by the id, after any origin).
pub fn upload_of(url: &str, scope: &str) -> Result<Uuid, Error> {
    let path = match url.find("://") {
        Some(at) => {
            let rest = &url[at + 3..];
            rest.find('/').map_or("", |p| &rest[p..])
        }
        None => url,
    };
    path.strip_prefix(scope)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| Uuid::try_parse(id.trim_end_matches('/')).ok())
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "{url:?} is not the URL of an upload of this endpoint ({scope}/<id>)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keeps_empty_values_and_keys_without_one() {
        let pairs =
            metadata("filename d29ybGRfZG9taW5hdGlvbi5wZGY=,is_confidential,empty ").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("filename".into(), b"world_domination.pdf".to_vec()),
                ("is_confidential".into(), vec![]),
                ("empty".into(), vec![]),
            ]
        );
        assert!(metadata("").unwrap().is_empty());
        assert!(metadata("a !!!").is_err(), "not base64");
        assert!(metadata("a YQ==,a YQ==").is_err(), "a key twice");
        assert!(metadata(",a YQ==").is_err(), "an empty key");
    }

    #[test]
    fn checksums_name_a_known_algorithm() {
        assert_eq!(
            checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap().0,
            Algorithm::Sha1
        );
        assert!(checksum("crc32 AAAA").is_err());
        assert!(checksum("sha1").is_err());
        assert!(checksum("md5 !!").is_err());
        assert_eq!(algorithms(), "sha1,sha256,md5");
    }

    #[test]
    fn concat_names_partials_by_url_or_path() {
        let id = Uuid::new_v4();
        assert_eq!(concat("partial").unwrap(), ConcatHeader::Partial);
        let urls = format!("final;/files/{id} http://h:1/files/{id}");
        let ConcatHeader::Final(parts) = concat(&urls).unwrap() else {
            panic!("final expected")
        };
        for part in &parts {
            assert_eq!(upload_of(part, "/files").unwrap(), id);
        }
        assert!(upload_of(&format!("/other/{id}"), "/files").is_err());
        assert!(upload_of("/files/not-an-id", "/files").is_err());
        assert!(concat("final").is_err());
    }
}
