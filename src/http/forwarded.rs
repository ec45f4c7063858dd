//! Who the client is, and which address it used, when tranche runs behind
//! proxies. `X-Forwarded-For`, `-Proto`, `-Host` and `-Port` count only on a
//! connection from a configured trusted proxy (`trusted_proxies`): anyone else
//! can write them, so from anyone else they are ignored.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{Settings, TrustedProxies};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::uri::Authority;
use actix_web::HttpRequest;

fn peer_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip().to_canonical())
}

/// The client's address: the connection's peer, or, when the peer is a
/// trusted proxy, the nearest address in `X-Forwarded-For` that is not one.
/// The header is walked from the right because each proxy appends the address
/// it saw; everything left of the first untrusted hop was written by that hop
/// (or by the client) and may be invented.
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer_ip(req).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for(req.headers()).rev() {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            // Garbage from a trusted hop: the last address we could vouch for.
            None => return client,
        }
    }
    client
}

/// Every `X-Forwarded-For` entry, left to right, over all header lines.
fn forwarded_for(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>()
        .into_iter()
}

/// An address as proxies write it: bare, or with a port (`[::1]:80`, `1.2.3.4:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The last value of a forwarded header: the one the nearest (trusted) proxy set.
fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
}

/// `scheme://host[:port]` as the client addressed us, from the forwarded
/// headers of a trusted proxy. `None` when the peer is not trusted or sent no
/// `X-Forwarded-Proto`/`-Host`: callers then keep URLs relative.
pub fn forwarded_origin(req: &HttpRequest, trusted: &TrustedProxies) -> Option<String> {
    if !peer_ip(req).is_some_and(|ip| trusted.contains(ip)) {
        return None;
    }
    let headers = req.headers();
    let proto = last_value(headers, "x-forwarded-proto")
        .map(str::to_ascii_lowercase)
        .filter(|p| p == "http" || p == "https");
    let forwarded_host = last_value(headers, "x-forwarded-host").and_then(valid_host);
    if proto.is_none() && forwarded_host.is_none() {
        return None;
    }
    let scheme = proto.unwrap_or_else(|| "http".into());
    let host = forwarded_host.or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(valid_host)
    })?;
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = last_value(headers, "x-forwarded-port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != default_port && host.port_u16().is_none());
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// A host (and optional port) fit to put in a URL: no user info, no path.
fn valid_host(raw: &str) -> Option<Authority> {
    raw.parse::<Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
}

/// The origin that absolute URLs start with: `public_url` when set, else the
/// one a trusted proxy forwarded, else none (URLs stay relative).
pub fn external_origin(req: &HttpRequest, settings: &Settings) -> Option<String> {
    match &settings.public_url {
        Some(url) => Some(url.trim_end_matches('/').to_owned()),
        None => forwarded_origin(req, &settings.trusted_proxies),
    }
}

/// `path` (starting with `/`) under `origin`; an already absolute URL stays.
pub fn absolute(origin: Option<&str>, path: &str) -> String {
    match origin {
        Some(origin) if path.starts_with('/') => format!("{origin}{path}"),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn trusted(list: &[&str]) -> TrustedProxies {
        list.iter().collect()
    }

    fn from(peer: &str) -> TestRequest {
        TestRequest::default().peer_addr(format!("{peer}:40000").parse().unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn settings_accept_a_list_or_a_comma_separated_string() {
        let list: TrustedProxies =
            serde_json::from_value(serde_json::json!(["10.0.0.5", "10.1.0.0/16", "::1"])).unwrap();
        let text: TrustedProxies =
            serde_json::from_value(serde_json::json!("10.0.0.5, 10.1.0.0/16,::1")).unwrap();
        assert_eq!(list, text);
        assert!(list.contains(ip("10.1.200.3")));
        assert!(!list.contains(ip("10.2.0.1")));
        let err = serde_json::from_value::<TrustedProxies>(serde_json::json!(["10.0.0.0/33"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        let back: Vec<String> = list.into();
        assert_eq!(back, ["10.0.0.5/32", "10.1.0.0/16", "::1/128"]);
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_an_ipv4_network() {
        assert!(trusted(&["127.0.0.1"]).contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let req = from("198.51.100.7")
            .insert_header(("x-forwarded-for", "203.0.113.1"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .to_http_request();
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(client_ip(&req, &t), ip("198.51.100.7"));
        assert_eq!(forwarded_origin(&req, &t), None);
        assert_eq!(
            client_ip(&req, &TrustedProxies::default()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops() {
        // The client wrote the first entry itself; the outer proxy 10.0.0.2
        // appended the address it saw; the inner proxy 10.0.0.1 connects to us.
        let req = from("10.0.0.1")
            .insert_header(("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2"))
            .to_http_request();
        assert_eq!(
            client_ip(&req, &trusted(&["10.0.0.0/24"])),
            ip("203.0.113.9")
        );
        // Trusting only the inner proxy: the outer one is the client.
        assert_eq!(client_ip(&req, &trusted(&["10.0.0.1"])), ip("10.0.0.2"));
    }

    #[test]
    fn several_header_lines_ports_and_garbage() {
        let req = from("10.0.0.1")
            .append_header(("x-forwarded-for", "203.0.113.9:5555"))
            .append_header(("x-forwarded-for", "[2001:db8::1]:80, 10.0.0.3"))
            .to_http_request();
        assert_eq!(
            client_ip(&req, &trusted(&["10.0.0.0/8"])),
            ip("2001:db8::1")
        );
        let req = from("10.0.0.1")
            .insert_header(("x-forwarded-for", "not-an-ip, 10.0.0.3"))
            .to_http_request();
        assert_eq!(client_ip(&req, &trusted(&["10.0.0.0/8"])), ip("10.0.0.3"));
        // A trusted proxy that sends no header: the proxy itself.
        let req = from("10.0.0.1").to_http_request();
        assert_eq!(client_ip(&req, &trusted(&["10.0.0.0/8"])), ip("10.0.0.1"));
    }

    #[test]
    fn origin_from_a_trusted_proxy() {
        let t = trusted(&["127.0.0.1"]);
        let req = from("127.0.0.1")
            .insert_header(("host", "127.0.0.1:8081"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("x-forwarded-host", "uploads.example.com"))
            .insert_header(("x-forwarded-port", "443"))
            .to_http_request();
        assert_eq!(
            forwarded_origin(&req, &t).as_deref(),
            Some("https://uploads.example.com")
        );
        let req = from("127.0.0.1")
            .insert_header(("x-forwarded-proto", "http"))
            .insert_header(("x-forwarded-host", "127.0.0.1"))
            .insert_header(("x-forwarded-port", "8443"))
            .to_http_request();
        assert_eq!(
            forwarded_origin(&req, &t).as_deref(),
            Some("http://127.0.0.1:8443")
        );
        // Proto alone keeps the Host the proxy passed on.
        let req = from("127.0.0.1")
            .insert_header(("host", "files.example.com"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert_eq!(
            forwarded_origin(&req, &t).as_deref(),
            Some("https://files.example.com")
        );
        // No forwarded header at all: relative URLs, as without a proxy.
        let req = from("127.0.0.1")
            .insert_header(("host", "files.example.com"))
            .to_http_request();
        assert_eq!(forwarded_origin(&req, &t), None);
    }

    #[test]
    fn a_bad_forwarded_host_or_proto_is_not_used() {
        let t = trusted(&["127.0.0.1"]);
        for (proto, host) in [
            ("javascript", "ok.example"),
            ("https", "user@evil.example"),
            ("https", "evil.example/path"),
        ] {
            let req = from("127.0.0.1")
                .insert_header(("host", "files.example.com"))
                .insert_header(("x-forwarded-proto", proto))
                .insert_header(("x-forwarded-host", host))
                .to_http_request();
            let origin = forwarded_origin(&req, &t);
            assert!(
                origin.as_deref().is_none_or(|o| !o.contains("evil")
                    && (o.starts_with("http://") || o.starts_with("https://"))),
                "{proto} {host}: {origin:?}"
            );
        }
    }

    #[test]
    fn absolute_urls() {
        assert_eq!(
            absolute(Some("https://u.example"), "/api/v1/files/x"),
            "https://u.example/api/v1/files/x"
        );
        assert_eq!(absolute(None, "/api/v1/files/x"), "/api/v1/files/x");
        assert_eq!(
            absolute(Some("https://u.example"), "https://other/x"),
            "https://other/x"
        );
    }
}
