//! The OpenAPI 3.1 document of API v1: `docs/openapi.yaml`, written by hand
//! beside `docs/API.md`, embedded in the binary and turned into JSON once.
//! `GET /api/v1/openapi.json` serves it and `tranche openapi` prints it. The
//! tests below keep it in step with the routes of [`crate::http`] and with
//! every error code the server answers with.

use std::sync::LazyLock;

use serde_json::Value;

/// The document as written (YAML).
pub const YAML: &str = include_str!("../docs/openapi.yaml");

static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    // The file is part of the source and the tests parse it: a broken one
    // never gets this far.
    serde_norway::from_str(YAML).expect("docs/openapi.yaml is valid YAML")
});

static JSON: LazyLock<String> = LazyLock::new(|| {
    let mut text = serde_json::to_string_pretty(document()).expect("a JSON value serializes");
    text.push('\n');
    text
});

/// The document as a JSON value.
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// The document as pretty-printed JSON, as served.
pub fn json() -> &'static str {
    &JSON
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const HTTP_MOD: &str = include_str!("http/mod.rs");
    /// Every file that writes an error code into an answer.
    const CODE_SOURCES: [&str; 4] = [
        include_str!("core/error.rs"),
        include_str!("http/error.rs"),
        include_str!("http/service.rs"),
        include_str!("startup.rs"),
    ];
    const METHODS: [&str; 8] = [
        "get", "head", "post", "put", "delete", "patch", "options", "trace",
    ];

    /// The string literals in `text`, in order.
    fn literals(text: &str) -> Vec<&str> {
        text.split('"').skip(1).step_by(2).collect()
    }

    /// (path, method) of every route in `http::configure`, read from its
    /// source: each `web::resource(...)` with the methods its
    /// `allowed_only("...")` lists, under `/api/v1` when it sits in that scope.
    fn routes() -> BTreeSet<(String, String)> {
        let scope_start = HTTP_MOD.find("web::scope(\"/api/v1\")").unwrap();
        let scope_end = HTTP_MOD.find("web::to(not_found)").unwrap();
        let mut routes = BTreeSet::new();
        for (at, _) in HTTP_MOD.match_indices("web::resource(") {
            let rest = &HTTP_MOD[at..];
            let args = &rest[..rest.find(')').unwrap()];
            let allow_at = rest.find("allowed_only(\"").unwrap() + "allowed_only(".len();
            let allow = literals(&rest[allow_at..])[0];
            let prefix = if at > scope_start && at < scope_end {
                "/api/v1"
            } else {
                ""
            };
            for path in literals(args) {
                // `["", "/"]`: one resource with and without the slash.
                if path == "/" && prefix == "/api/v1" {
                    continue;
                }
                for method in allow.split(", ") {
                    routes.insert((format!("{prefix}{path}"), method.to_ascii_lowercase()));
                }
            }
        }
        assert!(
            routes.len() > 10,
            "the route reader found too few: {routes:?}"
        );
        routes
    }

    fn operations() -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in document()["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    ops.insert((path.clone(), method.to_string()));
                }
            }
        }
        ops
    }

    #[test]
    fn every_route_is_documented_and_every_operation_is_routed() {
        let routes = routes();
        let ops = operations();
        let undocumented: Vec<_> = routes.difference(&ops).collect();
        let unrouted: Vec<_> = ops.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from docs/openapi.yaml: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations in docs/openapi.yaml that no route serves: {unrouted:?}"
        );
    }

    /// The codes the server can answer with: each `=> "code"` arm of the
    /// `code()` functions and each `"error": "code"` written directly.
    fn codes_in_source() -> BTreeSet<String> {
        let mut codes = BTreeSet::new();
        let mut add = |text: &str, marker: &str| {
            for (at, _) in text.match_indices(marker) {
                // From the quote that opens the code.
                let rest = &text[at + marker.len() - 1..];
                let code = literals(rest)[0];
                // Not a placeholder in a comment (`"<stable code>"`).
                if code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    codes.insert(code.to_string());
                }
            }
        };
        for source in CODE_SOURCES {
            if let Some(start) = source.find("pub fn code(&self)") {
                let body = &source[start..];
                add(&body[..body.find("\n    }\n").unwrap()], "=> \"");
            }
            add(source, "\"error\": \"");
        }
        codes
    }

    #[test]
    fn every_error_code_is_documented_and_every_documented_code_exists() {
        let documented: BTreeSet<String> = document()["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let in_source = codes_in_source();
        for code in [
            "invalid_request",
            "not_found",
            "range_not_satisfiable",
            "not_ready",
        ] {
            assert!(in_source.contains(code), "the code reader missed {code}");
        }
        let undocumented: Vec<_> = in_source.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&in_source).collect();
        assert!(
            undocumented.is_empty(),
            "error codes missing from ErrorCode in docs/openapi.yaml: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "ErrorCode lists codes the server never answers with: {unknown:?}"
        );
        // docs/API.md is the contract: each code is explained there too.
        let contract = include_str!("../docs/API.md");
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        for code in &documented {
            let explained = contract.match_indices(code.as_str()).any(|(at, _)| {
                let before = contract.as_bytes().get(at.wrapping_sub(1)).copied();
                let after = contract.as_bytes().get(at + code.len()).copied();
                !before.is_some_and(word) && !after.is_some_and(word)
            });
            assert!(explained, "{code} is not explained in docs/API.md");
        }
    }

    /// Resolves a local `$ref` (`#/components/...`).
    fn resolve(reference: &str) -> Option<&'static Value> {
        let pointer = reference.strip_prefix('#')?;
        document().pointer(pointer)
    }

    fn walk<'a>(v: &'a Value, visit: &mut impl FnMut(&'a Value)) {
        visit(v);
        match v {
            Value::Object(m) => m.values().for_each(|c| walk(c, visit)),
            Value::Array(a) => a.iter().for_each(|c| walk(c, visit)),
            _ => {}
        }
    }

    #[test]
    fn references_and_links_resolve() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut refs = Vec::new();
        walk(doc, &mut |v| {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                refs.push(r);
            }
        });
        for r in &refs {
            assert!(resolve(r).is_some(), "$ref {r} does not resolve");
        }
        let mut ids = BTreeSet::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let id = op["operationId"]
                        .as_str()
                        .expect("every operation has an id");
                    assert!(ids.insert(id), "operationId {id} is used twice");
                }
            }
        }
        let mut targets = Vec::new();
        walk(doc, &mut |v| {
            if let Some(links) = v.get("links").and_then(Value::as_object) {
                for link in links.values() {
                    targets.push(link["operationId"].as_str().unwrap());
                }
            }
        });
        assert!(
            targets.len() >= 5,
            "the create → chunk → complete → download chain"
        );
        for t in targets {
            assert!(
                ids.contains(t),
                "a link names operationId {t}, which does not exist"
            );
        }
    }

    #[test]
    fn every_error_answer_with_a_body_is_the_error_object() {
        for (path, item) in document()["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                for (status, resp) in op["responses"].as_object().unwrap() {
                    let resp = match resp.get("$ref").and_then(Value::as_str) {
                        Some(r) => resolve(r).unwrap(),
                        None => resp,
                    };
                    let Some(content) = resp.get("content") else {
                        assert!(
                            method == "head" || !status.starts_with(['4', '5']),
                            "{method} {path} {status} has no body"
                        );
                        continue;
                    };
                    if status.starts_with(['4', '5']) {
                        let schema = &content["application/json"]["schema"];
                        let r = schema["$ref"].as_str().unwrap_or_default();
                        assert!(
                            r == "#/components/schemas/Error"
                                || r == "#/components/schemas/NotReady",
                            "{method} {path} {status} is not an Error"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn json_is_the_yaml() {
        let parsed: Value = serde_json::from_str(json()).unwrap();
        assert_eq!(&parsed, document());
    }
}
