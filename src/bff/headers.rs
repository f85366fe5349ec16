//! Which headers cross the gateway: the browser's credentials and every
//! hop-by-hop header stay behind on the way in, and upstream cookies on the way out.
//!
//! Hop-by-hop (RFC 9110 §7.6.1): `Connection` and every header it names,
//! `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`,
//! and RFC 2616's `Proxy-Authenticate`, `Proxy-Authorization`, `Trailer`.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that concern one connection only, in both directions.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers the gateway replaces or must not pass on:
/// - `Cookie`, `Authorization`: the browser's credentials for the gateway,
///   never for the upstream (Duende.BFF's GHSA-vvg7-p7jw-8qr3 forwarded cookies);
///   the gateway adds its own `Authorization`;
/// - `X-CSRF-Token`: the double-submit token, a gateway credential too;
/// - `Host`: set to the upstream's;
/// - `Expect`: `100-continue` is answered by the gateway's own server.
///
/// Every other end-to-end header passes, `Forwarded` and `X-Forwarded-*`
/// included, with the browser's address appended to `X-Forwarded-For` as
/// any proxy does (see [`append_forwarded_for`]): an upstream that trusts the
/// gateway reads the right-most entry, which the gateway wrote.
const REQUEST_ONLY: [HeaderName; 5] =
    [header::COOKIE, header::AUTHORIZATION, HeaderName::from_static("x-csrf-token"), header::HOST, header::EXPECT];

/// Removes from a browser's request every header the upstream must not see
/// (see [`REQUEST_ONLY`] and [`HOP_BY_HOP`]).
pub(crate) fn strip_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in &REQUEST_ONLY {
        headers.remove(name);
    }
}

/// Appends the browser's address to `X-Forwarded-For` (creating it), as
/// reverse proxies do.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: std::net::IpAddr) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    let received: Vec<&str> = headers.get_all(&XFF).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if received.is_empty() { client.to_string() } else { format!("{}, {client}", received.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(XFF, value);
    }
}

/// Removes from an upstream's response its hop-by-hop headers and every
/// `Set-Cookie` whose cookie name `keep` refuses.
pub(crate) fn strip_response(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    strip_hop_by_hop(headers);
    let header::Entry::Occupied(cookies) = headers.entry(header::SET_COOKIE) else { return };
    let (_, values) = cookies.remove_entry_mult();
    let kept: Vec<HeaderValue> = values.filter(|value| cookie_name(value).is_some_and(&keep)).collect();
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

/// The cookie name of a `Set-Cookie` value (RFC 6265 §5.2: up to the first
/// `=`, trimmed); `None` when there is no usable name.
fn cookie_name(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let pair = &bytes[..bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len())];
    let name = pair[..pair.iter().position(|&b| b == b'=')?].trim_ascii();
    std::str::from_utf8(name).ok().filter(|name| !name.is_empty())
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Names that do not parse cannot be present in the map anyway.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn requests_lose_credentials_and_hop_by_hop_headers() {
        let mut headers = map(&[
            ("cookie", "__Host-access=a; theme=dark"),
            ("cookie", "other=1"),
            ("authorization", "Bearer browser"),
            ("proxy-authorization", "Basic eDp5"),
            ("connection", "keep-alive, X-Named-One"),
            ("connection", " x-named-two ,, bad name"),
            ("x-named-one", "1"),
            ("x-named-two", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "gateway.example"),
            ("expect", "100-continue"),
            ("x-csrf-token", "abc"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("x-request-id", "r-1"),
            ("sec-fetch-site", "same-origin"),
            ("if-none-match", "\"v1\""),
        ]);
        strip_request(&mut headers);
        assert_eq!(
            names(&headers),
            [
                "accept",
                "content-length",
                "content-type",
                "forwarded",
                "if-none-match",
                "sec-fetch-site",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-real-ip",
                "x-request-id"
            ]
        );
        append_forwarded_for(&mut headers, [192, 0, 2, 7].into());
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4, 192.0.2.7");
        let mut fresh = HeaderMap::new();
        append_forwarded_for(&mut fresh, [192, 0, 2, 7].into());
        assert_eq!(fresh["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn connection_may_name_any_header_even_end_to_end_ones() {
        let mut headers = map(&[("connection", "X-Trace, accept"), ("x-trace", "t"), ("accept", "*/*"), ("x-k", "v")]);
        strip_request(&mut headers);
        assert_eq!(names(&headers), ["x-k"]);
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_and_cookies_not_allowed() {
        let mut headers = map(&[
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "session=upstream; HttpOnly; Path=/"),
            ("set-cookie", "theme=dark; Path=/"),
            ("set-cookie", " theme = light"),
            ("set-cookie", "__Host-access=stolen; Secure; Path=/"),
            ("set-cookie", "no-equals-sign"),
            ("set-cookie", "=nameless"),
            ("content-type", "text/plain"),
            ("etag", "\"v1\""),
        ]);
        strip_response(&mut headers, |name| name == "theme");
        assert_eq!(names(&headers), ["content-type", "etag", "set-cookie"]);
        let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark; Path=/", " theme = light"]);

        let mut headers = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2"), ("vary", "accept")]);
        strip_response(&mut headers, |_| false);
        assert_eq!(names(&headers), ["vary"]);
    }
}
