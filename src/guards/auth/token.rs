//! Upload tokens: JWTs signed with the configured secret (HS256 only), the
//! self-hosted counterpart of an S3 presigned URL. A token either names one
//! upload (`upload_id`) or lets its holder start uploads within limits
//! (`max_size`, `content_types`, `max_uploads`, `max_retention`). `exp` is
//! required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The claims tranche reads; others are ignored, so a backend may add its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub iat: Option<u64>,
    /// Who the token was issued to; it names the caller's rate-limit bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The token's own id, as its issuer named it; hooks are told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// This upload only: its chunks, status, complete, abort and download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<Uuid>,
    /// For a create token: the largest file it may announce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// For a create token: content types it may declare (`video/*`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_types: Option<Vec<String>>,
    /// For a create token: how many uploads it may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uploads: Option<u64>,
    /// For a create token: the longest retention (seconds) its uploads'
    /// files get; a create asking for more, or for none, gets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retention: Option<u64>,
    /// For a create token: its owner's quota of stored bytes, at most the
    /// server's `quota.max_stored_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
    /// For a create token: its owner's quota of pending bytes, at most the
    /// server's `quota.max_pending_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_bytes: Option<u64>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired; ask for a new one")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(HS256)")
    }
}

/// Shortest secret accepted: HS256 wants at least as many bytes as its output.
pub const MIN_SECRET_LEN: usize = 32;

impl Tokens {
    pub fn new(secret: &[u8], leeway: Duration) -> anyhow::Result<Tokens> {
        if secret.len() < MIN_SECRET_LEN {
            anyhow::bail!(
                "auth.jwt_secret must be at least {MIN_SECRET_LEN} bytes; generate one with `openssl rand -hex 32`"
            );
        }
        // Only HS256: a token claiming another algorithm (or `none`) is refused
        // before its signature is even looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// A token for one upload, valid for `ttl`.
    pub fn mint_for_upload(
        &self,
        id: Uuid,
        sub: Option<String>,
        ttl: Duration,
    ) -> anyhow::Result<String> {
        let now = unix_now();
        self.mint(&Claims {
            exp: now + ttl.as_secs().max(1),
            iat: Some(now),
            sub,
            upload_id: Some(id),
            ..Claims::default()
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        match decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Invalid("only HS256 tokens are accepted".into())
                }
                ErrorKind::ImmatureSignature => TokenError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    TokenError::Invalid(format!("the `{c}` claim is required"))
                }
                ErrorKind::Json(_) => TokenError::Invalid("its claims are malformed".into()),
                _ => TokenError::Invalid("it is not a well-formed JWT".into()),
            }),
        }
    }
}

/// An RFC 7519 NumericDate: seconds since the epoch, which may have a
/// fraction (PyJWT and others send `1767225600.25`). Whole seconds are kept,
/// rounded down; a negative, non-finite or non-numeric value is refused.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a NumericDate (seconds since the Unix epoch)")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a NumericDate cannot be negative"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            if v.is_finite() && (0.0..u64::MAX as f64).contains(&v) {
                Ok(v.floor() as u64)
            } else {
                Err(E::custom("a NumericDate must be a non-negative number"))
            }
        }
    }
    d.deserialize_any(Seconds)
}

/// An optional NumericDate: `null` counts as absent, as it did when the
/// claim was a plain `Option<u64>`.
fn optional_numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct NumericDate(#[serde(deserialize_with = "numeric_date")] u64);
    Ok(Option::<NumericDate>::deserialize(d)?.map(|n| n.0))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::new(SECRET, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn a_minted_upload_token_verifies() {
        let t = tokens();
        let id = Uuid::new_v4();
        let jwt = t
            .mint_for_upload(id, Some("alice".into()), Duration::from_secs(60))
            .unwrap();
        let claims = t.verify(&jwt).unwrap();
        assert_eq!(claims.upload_id, Some(id));
        assert_eq!(claims.sub.as_deref(), Some("alice"));
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let t = tokens();
        let old = t
            .mint(&Claims {
                exp: unix_now() - 60,
                ..Claims::default()
            })
            .unwrap();
        assert_eq!(t.verify(&old), Err(TokenError::Expired));

        let good = t
            .mint(&Claims {
                exp: unix_now() + 60,
                max_size: Some(10),
                ..Claims::default()
            })
            .unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        parts[1] = b64.encode(format!(
            r#"{{"exp":{},"max_size":999999}}"#,
            unix_now() + 60
        ));
        assert!(matches!(
            t.verify(&parts.join(".")),
            Err(TokenError::Invalid(_))
        ));

        let other = Tokens::new(b"another-secret-another-secret-xx", Duration::ZERO).unwrap();
        assert!(matches!(other.verify(&good), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let t = tokens();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = b64.encode(format!(r#"{{"exp":{}}}"#, unix_now() + 60));
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            claims
        );
        assert!(t.verify(&none).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                exp: unix_now() + 60,
                ..Claims::default()
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(t.verify(&hs512), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let t = tokens();
        let now = unix_now();
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({
                "sub": "x",
                "exp": now as f64 + 60.75,
                "iat": now as f64 - 0.5,
                "nbf": now as f64 - 1.25,
            }),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let claims = t
            .verify(&jwt)
            .expect("fractional exp/iat/nbf are NumericDates");
        assert_eq!(claims.exp, now + 60);
        assert_eq!(claims.iat, Some(now - 1));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": now as f64 - 60.5}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(t.verify(&expired), Err(TokenError::Expired));
        let negative = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": now + 60, "iat": -1.5}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(t.verify(&negative), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn a_null_iat_reads_as_absent_as_before() {
        // A backend whose claims struct has `iat: Option<u64>` without
        // `skip_serializing_if` writes `"iat": null`; earlier versions took it.
        let t = tokens();
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x", "exp": unix_now() + 60, "iat": null}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let claims = t.verify(&jwt).expect("a null iat is no iat");
        assert_eq!(claims.iat, None);
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let t = tokens();
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(t.verify(&jwt), Err(TokenError::Invalid(_))));
    }
}
