//! Property tests ("fuzzing" by proptest) of the code that reads what clients
//! send before anything else looks at it: ids, chunk indexes, digest headers,
//! idempotency keys, create bodies, credentials, content signatures. Each runs
//! a few thousand random and mutated inputs in CI; none may panic, and no
//! mutated credential may be accepted.

use std::time::Duration;

use proptest::prelude::*;
use tranche::config::AuthSettings;
use tranche::core;
use tranche::guards::auth::{Access, Authenticator, Claims};
use tranche::guards::limits::content;
use tranche::http::extract::{parse_id, parse_index};
use tranche::http::v1::uploads::parse_content_digest;
use tranche::wire::CreateRequest;

const KEY: &str = "fuzz-backend-key-0123456789";
const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret!";

fn authenticator() -> Authenticator {
    let settings = AuthSettings {
        enabled: true,
        api_keys: vec![KEY.into()],
        jwt_secret: Some(SECRET.into()),
        ..AuthSettings::default()
    };
    Authenticator::from_settings(&settings, Duration::from_secs(3600)).unwrap()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn path_parts_never_panic(s in ".{0,100}") {
        let _ = parse_id(&s);
        let _ = parse_index(&s);
    }

    #[test]
    fn a_parsed_id_is_the_uuid_it_reads(id in any::<[u8; 16]>()) {
        let uuid = uuid::Uuid::from_bytes(id);
        prop_assert_eq!(parse_id(&uuid.to_string()).unwrap(), uuid);
    }

    #[test]
    fn digest_headers_never_panic(s in "(sha-256|sha-512|[a-z-]{0,8})=:[A-Za-z0-9+/=:,]{0,60}:?(, .{0,20})?") {
        let _ = parse_content_digest(&s);
    }

    #[test]
    fn idempotency_keys_are_checked_not_trusted(s in ".{0,300}") {
        if let Ok(Some(k)) = core::idempotency_key(Some(s.clone()), Some("sub:x")) {
            prop_assert!(s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()));
            // Scoped to its caller: the same key from another caller, or with
            // no caller, names another entry.
            let other = core::idempotency_key(Some(s.clone()), Some("sub:y")).unwrap();
            prop_assert_ne!(Some(&k), other.as_ref());
            let open = core::idempotency_key(Some(s.clone()), None).unwrap();
            prop_assert_ne!(Some(&k), open.as_ref());
        }
    }

    #[test]
    fn create_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_json::from_slice::<CreateRequest>(&bytes);
    }

    #[test]
    fn create_bodies_from_json_like_text_never_panic(
        name in ".{0,40}", size in any::<i128>(), ct in "[a-z*/;= -]{0,30}", extra in "[\\[\\]{}\",:0-9a-z]{0,40}"
    ) {
        let text = format!(r#"{{"filename":{},"size":{size},"content_type":{},"x":{extra}}}"#,
            serde_json::to_string(&name).unwrap(), serde_json::to_string(&ct).unwrap());
        let _ = serde_json::from_str::<CreateRequest>(&text);
    }

    #[test]
    fn random_credentials_get_nothing(h in ".{0,200}") {
        let auth = authenticator();
        match auth.authenticate(Some(&h)) {
            Ok(Access::Anonymous) | Err(_) => {}
            Ok(other) => prop_assert!(false, "{h:?} was accepted as {other:?}"),
        }
        let bearer = format!("Bearer {h}");
        match auth.authenticate(Some(&bearer)) {
            Err(_) => {}
            Ok(other) => prop_assert!(false, "{bearer:?} was accepted as {other:?}"),
        }
    }

    #[test]
    fn a_mutated_token_is_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let auth = authenticator();
        let id = uuid::Uuid::new_v4();
        let good = auth.tokens().unwrap().mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            upload_id: Some(id),
            ..Claims::default()
        }).unwrap();
        let mut bytes = good.clone().into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
        match auth.authenticate(Some(&format!("Bearer {mutated}"))) {
            Err(_) => {}
            // Base64url's last character carries spare bits: a change there
            // can decode to the very same signature, and so the same token.
            Ok(Access::Upload { id: got, .. }) => prop_assert_eq!(got, id),
            Ok(other) => prop_assert!(false, "mutated token accepted as {other:?}"),
        }
    }

    #[test]
    fn signatures_and_patterns_never_panic(
        head in proptest::collection::vec(any::<u8>(), 0..300), ct in "[a-z]{1,12}/[a-z0-9.+*-]{1,20}", pat in ".{0,30}"
    ) {
        let _ = content::check_signature(&ct, &head);
        let _ = content::is_valid_pattern(&pat);
        let _ = content::allowed_by(&[pat], &ct);
    }
}
