//! Content types: which ones an upload may declare, and whether the file's
//! first bytes agree with the declaration. Sniffing uses the `infer` crate's
//! signatures; a type it has no signature for is taken at its word.

use crate::core::Error;

/// How many leading bytes of chunk 0 are looked at. The longest signature
/// `infer` reads at a fixed place (tar's) ends at byte 262; more lets it look
/// into zip-based formats.
pub const SNIFF_LEN: usize = 8192;

/// `type/subtype`, `type/*` or `*/*`, in the characters RFC 6838 allows.
pub fn is_valid_pattern(pattern: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match pattern.split_once('/') {
        Some(("*", "*")) => true,
        Some((t, "*")) => token(t),
        Some((t, s)) => token(t) && token(s),
        None => false,
    }
}

/// The bare `type/subtype`, lower-cased, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Does `content_type` match one of `patterns`?
pub fn allowed_by(patterns: &[String], content_type: &str) -> bool {
    let ct = essence(content_type);
    let (ty, _) = ct.split_once('/').unwrap_or((ct.as_str(), ""));
    patterns.iter().any(|p| {
        let p = p.trim().to_ascii_lowercase();
        match p.split_once('/') {
            Some(("*", "*")) => true,
            Some((pt, "*")) => pt == ty,
            _ => p == ct,
        }
    })
}

/// Checks a declared type against the server's allow list (415 otherwise).
pub fn check_allowed(patterns: &[String], content_type: &str) -> Result<(), Error> {
    if patterns.is_empty() || allowed_by(patterns, content_type) {
        Ok(())
    } else {
        Err(Error::UnsupportedContentType {
            content_type: content_type.to_string(),
            allowed: patterns.join(", "),
        })
    }
}

/// Does the server know a signature for this declared type? Generic and
/// textual types are never checked: `application/octet-stream` means "any
/// bytes", and text has no signature worth trusting.
pub fn sniffable(content_type: &str) -> bool {
    let ct = canonical(&essence(content_type));
    let generic = ct.starts_with("text/")
        || matches!(
            ct.as_str(),
            "application/octet-stream" | "application/xml" | "application/json"
        );
    !generic && infer::is_mime_supported(&ct)
}

/// Checks the leading bytes of a file against its declared type. Containers
/// that share a signature (mp4/quicktime/3gp, webm/matroska, the zip family)
/// are not told apart: what this stops is a file of another kind entirely,
/// such as an executable declared as a video.
pub fn check_signature(declared: &str, head: &[u8]) -> Result<(), Error> {
    if !sniffable(declared) {
        return Ok(());
    }
    let declared_ct = canonical(&essence(declared));
    let detected = infer::get(head).map(|t| canonical(t.mime_type()));
    let ok = match &detected {
        None => false,
        Some(d) if *d == declared_ct => true,
        Some(d) => same_family(&declared_ct, d),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ContentMismatch {
            declared: declared_ct,
            detected: detected.unwrap_or_else(|| "of no known type".into()),
        })
    }
}

fn canonical(ct: &str) -> String {
    match ct {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "audio/mp3" => "audio/mpeg".into(),
        "application/x-zip-compressed" => "application/zip".into(),
        other => other.to_string(),
    }
}

fn same_family(a: &str, b: &str) -> bool {
    let family = |ct: &str| -> Option<&'static str> {
        let (ty, sub) = ct.split_once('/')?;
        match ty {
            // Audio and video containers share signatures across subtypes.
            "video" | "audio" => Some("media"),
            "application"
                if sub == "zip"
                    || sub == "java-archive"
                    || sub == "epub+zip"
                    || sub == "vnd.android.package-archive"
                    || sub.starts_with("vnd.openxmlformats-officedocument.")
                    || sub.starts_with("vnd.oasis.opendocument.") =>
            {
                Some("zip")
            }
            _ => None,
        }
    };
    matches!((family(a), family(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const MP4: &[u8] = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";

    #[test]
    fn patterns() {
        assert!(is_valid_pattern("video/*"));
        assert!(is_valid_pattern("image/png"));
        assert!(!is_valid_pattern("video"));
        assert!(!is_valid_pattern("video/mp4\r\n"));
        let allowed = vec!["video/*".to_string(), "image/png".to_string()];
        assert!(allowed_by(&allowed, "video/mp4"));
        assert!(allowed_by(&allowed, "Video/MP4; codecs=avc1"));
        assert!(allowed_by(&allowed, "image/png"));
        assert!(!allowed_by(&allowed, "image/jpeg"));
        assert!(!allowed_by(&allowed, "application/octet-stream"));
        assert!(check_allowed(&[], "anything/at-all").is_ok());
    }

    #[test]
    fn signatures() {
        assert!(check_signature("image/png", PNG).is_ok());
        assert!(check_signature("video/mp4", MP4).is_ok());
        assert!(check_signature("video/quicktime", MP4).is_ok());
        assert!(check_signature("video/mp4", ELF).is_err());
        assert!(check_signature("image/png", b"just some text").is_err());
        assert!(check_signature("image/jpeg", PNG).is_err());
        // Types without a known signature pass whatever their bytes.
        assert!(check_signature("text/plain", ELF).is_ok());
        assert!(check_signature("application/octet-stream", ELF).is_ok());
        assert!(sniffable("image/png") && !sniffable("text/csv"));
    }
}
