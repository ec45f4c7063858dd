//! `Idempotency-Key`: a retried create gets the first answer back. Keys are
//! scoped to their caller, answered one request at a time (a lease on the
//! key), and a key reused for another request is refused.

use std::time::{Duration, Instant};

use crate::context::AppContext;
use crate::core::lease::LeaseGuard;
use crate::core::live::store_error;
use crate::core::{Error, LEASE_TTL};
use crate::state::{IdempotencyRecord, LeaseOf, StateStore};
use crate::wire::CreateRequest;

/// Checks an `Idempotency-Key` header and scopes it to the caller, so that
/// one caller's key never answers another with an upload (and a token) that
/// is not theirs. `caller` is `None` when authentication is off; otherwise it
/// is the caller's `kind:id` (see [`Access::bucket`]).
///
/// The scope is a digest of an unambiguous encoding of (caller, key): a
/// plain `"{caller}|{key}"` would let sub `acme` with key `bob|k2` land on the
/// entry of sub `acme|bob` with key `k2` (Auth0's subs contain `|`).
pub fn idempotency_key(raw: Option<String>, caller: Option<&str>) -> Result<Option<String>, Error> {
    use sha2::{Digest, Sha256};
    let Some(key) = raw else { return Ok(None) };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    let scope = Sha256::digest(scope_encoding(caller, &key));
    Ok(Some(format!("v2:{}", hex::encode(scope))))
}

/// (caller, key) as bytes that no other pair encodes to: a tag for "no
/// caller", then each part prefixed with its length.
fn scope_encoding(caller: Option<&str>, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + caller.map_or(0, str::len) + 17);
    match caller {
        None => out.push(0),
        Some(caller) => {
            out.push(1);
            out.extend_from_slice(&(caller.len() as u64).to_be_bytes());
            out.extend_from_slice(caller.as_bytes());
        }
    }
    out.extend_from_slice(&(key.len() as u64).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Takes the lease that lets one create request with this Idempotency-Key
/// proceed at a time, waiting a little for another holder to finish.
pub(super) async fn hold_key(ctx: &AppContext, key: &str) -> Result<LeaseGuard, Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(10);
    loop {
        let lease = ctx
            .store
            .try_lease(LeaseOf::Create(key.to_owned()), LEASE_TTL)
            .await
            .map_err(|e| store_error(ctx, e))?;
        if let Some(lease) = lease {
            return Ok(LeaseGuard::new(ctx, lease));
        }
        if Instant::now() >= deadline {
            return Err(Error::CreateInProgress);
        }
        tokio::time::sleep(pause).await;
        // Gentle on a shared Redis while a slow create holds the key.
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Identifies a create request's content, so that an Idempotency-Key reused
/// for another request is told apart from a retry.
pub(super) fn request_digest(req: &CreateRequest) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(serde_json::to_vec(req).unwrap_or_default()))
}

/// The answer kept under an Idempotency-Key, for a retry of the same request;
/// another request with that key gets 422 rather than an upload of another
/// file (as the IETF Idempotency-Key draft advises).
pub(super) fn replay(
    first: &IdempotencyRecord,
    request_digest: &str,
) -> Result<serde_json::Value, Error> {
    first
        .replay(request_digest)
        .cloned()
        .ok_or(Error::IdempotencyKeyReused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_separator_in_the_caller_cannot_reach_another_callers_key() {
        let a = idempotency_key(Some("k2".into()), Some("sub:acme|bob")).unwrap();
        let b = idempotency_key(Some("bob|k2".into()), Some("sub:acme")).unwrap();
        assert_ne!(a, b);
        let c = idempotency_key(Some("b:k".into()), Some("sub:a")).unwrap();
        let d = idempotency_key(Some("k".into()), Some("sub:a:b")).unwrap();
        assert_ne!(c, d);
        // With auth off there is no caller, and that is a scope of its own.
        let open = idempotency_key(Some("sub:a|k".into()), None).unwrap();
        let e = idempotency_key(Some("k".into()), Some("sub:a")).unwrap();
        assert_ne!(open, e);
        assert_eq!(
            a,
            idempotency_key(Some("k2".into()), Some("sub:acme|bob")).unwrap(),
            "the same caller and key always name the same entry"
        );
    }

    proptest! {
        #[test]
        fn distinct_caller_key_pairs_never_share_a_scope(
            c1 in proptest::option::of("[a-z|:]{0,6}"),
            k1 in "[a-z|:]{1,6}",
            c2 in proptest::option::of("[a-z|:]{0,6}"),
            k2 in "[a-z|:]{1,6}",
        ) {
            let same = c1 == c2 && k1 == k2;
            let e1 = scope_encoding(c1.as_deref(), &k1);
            let e2 = scope_encoding(c2.as_deref(), &k2);
            prop_assert_eq!(e1 == e2, same);
            let s1 = idempotency_key(Some(k1), c1.as_deref()).unwrap();
            let s2 = idempotency_key(Some(k2), c2.as_deref()).unwrap();
            prop_assert_eq!(s1 == s2, same);
        }
    }
}
