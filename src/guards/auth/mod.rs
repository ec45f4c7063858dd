//! Who may do what. With `[auth] enabled = false` every request is let through
//! as [`Access::Open`]. With it on, `/api/v1` needs `Authorization: Bearer`
//! with an API key (full access) or an upload token ([`token`]). Handlers take
//! an [`Access`] and ask it before acting; the rules live here only.

pub mod keys;
pub mod token;

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::AuthSettings;
use crate::core::Error;
use crate::guards::limits::content;

pub use keys::ApiKeys;
pub use token::{Claims, TokenError, Tokens};

/// Credentials checking, built once from `[auth]`.
#[derive(Clone, Debug)]
pub struct Authenticator {
    enabled: bool,
    keys: ApiKeys,
    tokens: Option<Tokens>,
    upload_token_ttl: Option<Duration>,
    public_downloads: bool,
    public_metrics: bool,
    owner_may_delete: bool,
}

impl Authenticator {
    pub fn from_settings(s: &AuthSettings, upload_ttl: Duration) -> anyhow::Result<Authenticator> {
        let keys = ApiKeys::load(&s.api_keys, s.api_keys_file.as_deref())?;
        let secret = match (&s.jwt_secret, &s.jwt_secret_file) {
            (Some(secret), _) => Some(secret.trim().as_bytes().to_vec()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read auth.jwt_secret_file {}: {e}", path.display())
                    })?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            (None, None) => None,
        };
        let tokens = secret
            .map(|secret| Tokens::new(&secret, s.clock_leeway))
            .transpose()?;
        Ok(Authenticator {
            enabled: s.enabled,
            keys,
            tokens,
            upload_token_ttl: Some(s.upload_token_ttl.unwrap_or(upload_ttl)),
            public_downloads: s.public_downloads,
            public_metrics: s.public_metrics,
            owner_may_delete: s.owner_may_delete,
        })
    }

    /// Everything open: what tests and the quick start run with.
    pub fn disabled() -> Authenticator {
        Authenticator {
            enabled: false,
            keys: ApiKeys::default(),
            tokens: None,
            upload_token_ttl: None,
            public_downloads: false,
            public_metrics: false,
            owner_may_delete: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The rights carried by an `Authorization` header value (or its absence).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Access, Error> {
        if !self.enabled {
            return Ok(Access::Open);
        }
        let Some(value) = authorization else {
            return Ok(Access::Anonymous);
        };
        let credential = bearer_credential(value).ok_or_else(|| {
            Error::InvalidCredentials(
                "the Authorization header must be `Bearer <API key or upload token>`".into(),
            )
        })?;
        // A JWT has exactly two dots; API keys are checked otherwise.
        if credential.bytes().filter(|&b| b == b'.').count() == 2 {
            let tokens = self.tokens.as_ref().ok_or_else(|| {
                Error::InvalidCredentials(
                    "this server does not accept tokens, only API keys".into(),
                )
            })?;
            let claims = tokens.verify(credential).map_err(|e| match e {
                TokenError::Expired => Error::InvalidCredentials(e.to_string()),
                TokenError::Invalid(_) => Error::InvalidCredentials(e.to_string()),
            })?;
            return Ok(match claims.upload_id {
                Some(id) => Access::Upload {
                    id,
                    sub: claims.sub,
                },
                None => Access::Create {
                    token_id: token_id(credential),
                    claims,
                },
            });
        }
        match self.keys.verify(credential) {
            Some(key_id) => Ok(Access::Admin { key_id }),
            None => Err(Error::InvalidCredentials(
                "unknown API key or malformed token".into(),
            )),
        }
    }

    /// The rights of a credential in a download link: only a token for one
    /// upload; API keys and create tokens do not belong in URLs.
    pub fn authenticate_link(&self, token: &str) -> Result<Access, Error> {
        match self.authenticate(Some(&format!("Bearer {token}")))? {
            Access::Open => Ok(Access::Open),
            access @ Access::Upload { .. } => Ok(access),
            _ => Err(Error::InvalidCredentials(
                "only an upload's own token may be given as access_token; send other credentials in the Authorization header".into(),
            )),
        }
    }

    /// The `upload_token` for a create answer, when tokens are configured.
    pub fn upload_token(&self, id: Uuid, access: &Access) -> Result<Option<String>, Error> {
        match (&self.tokens, self.enabled) {
            (Some(tokens), true) => tokens
                .mint_for_upload(
                    id,
                    access.subject().map(str::to_owned),
                    self.upload_token_ttl.unwrap_or(Duration::from_secs(86_400)),
                )
                .map(Some)
                .map_err(Error::Internal),
            _ => Ok(None),
        }
    }

    /// May this caller download completed file `id`?
    pub fn may_download(&self, access: &Access, id: Uuid) -> Result<(), Error> {
        if self.public_downloads {
            return Ok(());
        }
        access.may_use(id)
    }

    /// May this caller delete completed file `id`? An API key may; the
    /// upload's own token only with `auth.owner_may_delete`.
    pub fn may_delete_file(&self, access: &Access, id: Uuid) -> Result<(), Error> {
        match access {
            Access::Upload { id: own, .. } if *own == id && !self.owner_may_delete => {
                Err(Error::Forbidden(
                    "deleting a file needs an API key (or auth.owner_may_delete = true \
                     for the upload's own token)"
                        .into(),
                ))
            }
            other => other.may_use(id),
        }
    }

    /// [`Authenticator::may_delete_file`] for a file uploaded with tus: the
    /// create token that started it counts as its owner.
    pub fn may_delete_sequential_file(
        &self,
        access: &Access,
        id: Uuid,
        creator: Option<&str>,
    ) -> Result<(), Error> {
        match access {
            Access::Create { token_id, .. } if creator == Some(token_id.as_str()) => {
                if self.owner_may_delete {
                    Ok(())
                } else {
                    Err(Error::Forbidden(
                        "deleting a file needs an API key (or auth.owner_may_delete = true \
                         for the token that uploaded it)"
                            .into(),
                    ))
                }
            }
            other => self.may_delete_file(other, id),
        }
    }

    /// May this caller run the operator's endpoints (`/api/v1/admin/...`)?
    /// Only with an API key (or with authentication off).
    pub fn may_administer(&self, access: &Access) -> Result<(), Error> {
        match access {
            Access::Open | Access::Admin { .. } => Ok(()),
            Access::Anonymous => Err(missing_credentials()),
            _ => Err(Error::Forbidden("this endpoint needs an API key".into())),
        }
    }

    /// Does this caller bring what a download needs before its id is even
    /// read? (Credentials, unless downloads are public.)
    pub fn may_try_download(&self, access: &Access) -> Result<(), Error> {
        if self.public_downloads {
            return Ok(());
        }
        access.require_credentials()
    }

    /// Does a download need credentials? Then its answer is the caller's
    /// alone, and shared caches must not keep it.
    pub fn downloads_are_private(&self) -> bool {
        self.enabled && !self.public_downloads
    }

    /// May this caller read `/metrics`?
    pub fn may_read_metrics(&self, access: &Access) -> Result<(), Error> {
        if self.public_metrics {
            return Ok(());
        }
        match access {
            Access::Open | Access::Admin { .. } => Ok(()),
            Access::Anonymous => Err(Error::Unauthorized(
                "/metrics needs an API key (or set auth.public_metrics = true)".into(),
            )),
            _ => Err(Error::Forbidden("/metrics needs an API key".into())),
        }
    }

    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }
}

/// The credential of a `Bearer` Authorization value. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` count too.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, credential) = value.trim().split_once([' ', '\t'])?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// A short, stable id of a token: names its bucket without keeping the token.
fn token_id(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// The caller's rights, extracted from the request.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authentication is off: everything is allowed.
    Open,
    /// Authentication is on and the request carries no credentials.
    Anonymous,
    /// An API key: full access.
    Admin { key_id: String },
    /// A token for one upload.
    Upload { id: Uuid, sub: Option<String> },
    /// A token that may start uploads within its claims.
    Create { claims: Claims, token_id: String },
}

impl Access {
    /// May the caller start an upload of `size` bytes of `content_type`?
    pub fn may_create(&self, size: u64, content_type: &str) -> Result<(), Error> {
        match self {
            Access::Open | Access::Admin { .. } => Ok(()),
            Access::Anonymous => Err(missing_credentials()),
            Access::Upload { .. } => Err(Error::Forbidden(
                "this token is for one upload and cannot start others".into(),
            )),
            Access::Create { claims, .. } => {
                if let Some(max) = claims.max_size {
                    if size > max {
                        return Err(Error::Forbidden(format!(
                            "this token allows files of at most {max} bytes ({}), not {size} ({})",
                            bytesize::ByteSize(max),
                            bytesize::ByteSize(size)
                        )));
                    }
                }
                if let Some(allowed) = &claims.content_types {
                    if !content::allowed_by(allowed, content_type) {
                        return Err(Error::Forbidden(format!(
                            "this token allows content types {}, not {content_type:?}",
                            allowed.join(", ")
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Refuses a request without credentials where authentication is on.
    /// Handlers ask this before they validate anything of the request, so
    /// that an anonymous caller gets 401, not an error about its input.
    pub fn require_credentials(&self) -> Result<(), Error> {
        match self {
            Access::Anonymous => Err(missing_credentials()),
            _ => Ok(()),
        }
    }

    /// May the caller send chunks to, read, complete, abort or download `id`?
    pub fn may_use(&self, id: Uuid) -> Result<(), Error> {
        match self {
            Access::Open | Access::Admin { .. } => Ok(()),
            Access::Anonymous => Err(missing_credentials()),
            Access::Upload { id: allowed, .. } if *allowed == id => Ok(()),
            Access::Upload { .. } => {
                Err(Error::Forbidden("this token is for another upload".into()))
            }
            Access::Create { .. } => Err(Error::Forbidden(
                "a create token only starts uploads; use the upload_token from the create answer"
                    .into(),
            )),
        }
    }

    /// [`Access::may_use`] for an upload written in order (tus) that the
    /// create token `creator` started: that token may go on with it, since a
    /// tus client sends the same credential with every request.
    pub fn may_use_sequential(&self, id: Uuid, creator: Option<&str>) -> Result<(), Error> {
        match self {
            Access::Create { token_id, .. } if creator == Some(token_id.as_str()) => Ok(()),
            Access::Create { .. } => Err(Error::Forbidden(
                "a create token may only go on with the uploads it started".into(),
            )),
            other => other.may_use(id),
        }
    }

    /// The largest upload the caller may start (a create token's `max_size`).
    pub fn max_size(&self) -> Option<u64> {
        match self {
            Access::Create { claims, .. } => claims.max_size,
            _ => None,
        }
    }

    /// The id of the create token the caller holds, if that is what it holds.
    pub fn create_token_id(&self) -> Option<&str> {
        match self {
            Access::Create { token_id, .. } => Some(token_id),
            _ => None,
        }
    }

    /// The longest retention this caller's uploads may have (a create
    /// token's `max_retention`); `None`: no cap beyond the server's.
    pub fn max_retention(&self) -> Option<std::time::Duration> {
        match self {
            Access::Create { claims, .. } => {
                claims.max_retention.map(std::time::Duration::from_secs)
            }
            _ => None,
        }
    }

    /// Whose uploads the caller's creates start, for quotas and dedup: its
    /// token's `sub`, else its API key or its create token; with
    /// authentication off, everyone is one owner, `open`. `None`: a caller
    /// that starts no uploads.
    pub fn owner(&self) -> Option<String> {
        match self {
            Access::Open => Some("open".into()),
            _ => self.credential_name(),
        }
    }

    /// The name of the caller's credential: its token's `sub`, else its API
    /// key or its create token; `None` for the others.
    fn credential_name(&self) -> Option<String> {
        match self {
            Access::Admin { key_id } => Some(format!("key:{key_id}")),
            Access::Upload { sub: Some(s), .. } => Some(format!("sub:{s}")),
            Access::Create { claims, token_id } => Some(match &claims.sub {
                Some(s) => format!("sub:{s}"),
                None => format!("token:{token_id}"),
            }),
            Access::Upload { sub: None, .. } | Access::Open | Access::Anonymous => None,
        }
    }

    /// The token `sub` an owner (as [`Access::owner`] names it) stands for,
    /// if it stands for one.
    pub fn sub_of_owner(owner: &str) -> Option<&str> {
        owner.strip_prefix("sub:")
    }

    /// A create token's own quotas (`max_stored_bytes`, `max_pending_bytes`).
    pub fn quota_claims(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Access::Create { claims, .. } => (claims.max_stored_bytes, claims.max_pending_bytes),
            _ => (None, None),
        }
    }

    /// Who the caller is, for token subjects and logs.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Access::Upload { sub, .. } => sub.as_deref(),
            Access::Create { claims, .. } => claims.sub.as_deref(),
            _ => None,
        }
    }

    /// The rate-limit bucket this caller draws from: its key or token subject
    /// when it has one, else its address.
    pub fn bucket(&self, client: IpAddr) -> String {
        if let Some(name) = self.credential_name() {
            return name;
        }
        match self {
            Access::Upload { id, .. } => format!("upload:{id}"),
            _ => format!("ip:{client}"),
        }
    }
}

fn missing_credentials() -> Error {
    Error::Unauthorized(
        "this server needs `Authorization: Bearer <API key or upload token>`".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Authenticator, Tokens) {
        let settings = AuthSettings {
            enabled: true,
            api_keys: vec!["backend-key-0123456789".into()],
            jwt_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..AuthSettings::default()
        };
        let a = Authenticator::from_settings(&settings, Duration::from_secs(3600)).unwrap();
        let t = a.tokens().unwrap().clone();
        (a, t)
    }

    #[test]
    fn each_credential_gets_its_rights() {
        let (a, t) = auth();
        let id = Uuid::new_v4();
        assert!(matches!(a.authenticate(None), Ok(Access::Anonymous)));
        assert!(matches!(
            a.authenticate(Some("Bearer backend-key-0123456789")),
            Ok(Access::Admin { .. })
        ));
        assert!(a.authenticate(Some("Bearer wrong-key-0123456789")).is_err());
        assert!(a.authenticate(Some("Basic abc")).is_err());
        let upload = t
            .mint_for_upload(id, None, Duration::from_secs(60))
            .unwrap();
        let access = a.authenticate(Some(&format!("Bearer {upload}"))).unwrap();
        assert!(access.may_use(id).is_ok());
        assert!(matches!(
            access.may_use(Uuid::new_v4()),
            Err(Error::Forbidden(_))
        ));
        assert!(access.may_create(1, "video/mp4").is_err());
    }

    #[test]
    fn a_create_token_is_held_to_its_limits() {
        let (a, t) = auth();
        let jwt = t
            .mint(&Claims {
                exp: token::unix_now() + 60,
                max_size: Some(1000),
                content_types: Some(vec!["video/*".into()]),
                ..Claims::default()
            })
            .unwrap();
        let access = a.authenticate(Some(&format!("Bearer {jwt}"))).unwrap();
        assert!(access.may_create(1000, "video/mp4").is_ok());
        assert!(access.may_create(1001, "video/mp4").is_err());
        assert!(access.may_create(10, "image/png").is_err());
        assert!(access.may_use(Uuid::new_v4()).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "bEaReR  k ",
            "Bearer\tk",
        ] {
            assert_eq!(bearer_credential(value), Some("k"), "{value:?}");
        }
        for value in ["Basic k", "Bearer", "Bearer   ", "Bearerk", "Token k"] {
            assert_eq!(bearer_credential(value), None, "{value:?}");
        }
    }

    #[test]
    fn disabled_auth_lets_everything_through() {
        let a = Authenticator::disabled();
        let access = a.authenticate(Some("Bearer whatever")).unwrap();
        assert!(access.may_use(Uuid::new_v4()).is_ok());
        assert!(a.may_read_metrics(&access).is_ok());
    }
}
