//! The upstream's base URL and the target of each proxied request:
//! `base/{path}?{query}`, refusing paths that would climb out of `base`.
//!
//! A dot segment may hide behind percent-encoding (`%2e%2e`, `%252e%252e`),
//! encoded separators (`..%2f`, `..%5c`) or a path parameter (`..;x`, which
//! Tomcat and Spring read as `..`): each segment is decoded up to three
//! times and split on both separators before being looked at.

use std::borrow::Cow;

use http::{
    HeaderValue, Uri,
    uri::{Authority, PathAndQuery, Scheme},
};
use percent_encoding::percent_decode;

use crate::config::ConfigError;

/// Where requests go, parsed once.
#[derive(Debug)]
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing `/` (empty for the root).
    base_path: String,
    /// The `Host` header the upstream gets.
    pub(crate) host: HeaderValue,
}

/// Why a request path cannot be forwarded (400).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadPath(pub(crate) &'static str);

/// How many rounds of percent-decoding a segment is looked through.
const DECODE_ROUNDS: usize = 3;

impl Upstream {
    /// Parses `http://host[:port][/base/path]` (no query, fragment or user info).
    pub(crate) fn parse(url: &str) -> Result<Self, ConfigError> {
        const SHAPE: ConfigError = ConfigError::Invalid("the upstream URL must look like http://host[:port][/path]");
        let uri: Uri = url.parse().map_err(|_| SHAPE)?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else { return Err(SHAPE) };
        if scheme != &Scheme::HTTP {
            // The client has no TLS connector (see the module documentation).
            return Err(ConfigError::Invalid("the upstream URL must be http:// (no TLS client is built in)"));
        }
        if uri.query().is_some() || url.contains('#') || authority.as_str().contains('@') {
            return Err(SHAPE);
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        if base_path.split('/').any(escapes) {
            return Err(ConfigError::Invalid("the upstream URL's path may not hold dot segments"));
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| SHAPE)?;
        Ok(Self { scheme: scheme.clone(), authority: authority.clone(), base_path, host })
    }

    /// The upstream URI for a request to `incoming` (the path the gateway
    /// was given, mount prefix already stripped, and its query).
    pub(crate) fn target(&self, incoming: &Uri) -> Result<Uri, BadPath> {
        let path = incoming.path();
        if !path.starts_with('/') {
            return Err(BadPath("The request path must start with /"));
        }
        if path.split('/').any(escapes) {
            return Err(BadPath("The request path may not hold dot segments"));
        }
        let query = incoming.query();
        let mut target = String::with_capacity(self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        target.push_str(&self.base_path);
        target.push_str(path);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let path_and_query =
            PathAndQuery::from_maybe_shared(target).map_err(|_| BadPath("The request path cannot be forwarded"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| BadPath("The request path cannot be forwarded"))
    }
}

/// Whether a path segment is, or hides, a `.` or `..` segment.
fn escapes(segment: &str) -> bool {
    // The common case: nothing that could hide a dot segment.
    if !segment.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let mut current = Cow::Borrowed(segment.as_bytes());
    for _ in 0..DECODE_ROUNDS {
        if has_dot_piece(&current) {
            return true;
        }
        let decoded: Cow<'_, [u8]> = percent_decode(&current).into();
        if decoded == current {
            return false;
        }
        current = Cow::Owned(decoded.into_owned());
    }
    // Still encoded after three rounds: nobody needs that; refuse it.
    true
}

/// Whether `bytes`, split on `/` and `\` with any `;parameters` dropped,
/// holds a `.` or `..` piece.
fn has_dot_piece(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'/' || b == b'\\').any(|piece| {
        let piece = &piece[..piece.iter().position(|&b| b == b';').unwrap_or(piece.len())];
        piece == b"." || piece == b".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str, path: &str) -> Result<String, BadPath> {
        Upstream::parse(base).unwrap().target(&path.parse().unwrap()).map(|uri| uri.to_string())
    }

    #[test]
    fn joins_base_path_and_query() {
        assert_eq!(target("http://up:8081", "/items?x=1&y=%20").unwrap(), "http://up:8081/items?x=1&y=%20");
        assert_eq!(target("http://up:8081/", "/").unwrap(), "http://up:8081/");
        assert_eq!(target("http://up/v1/", "/items/a%2Fb").unwrap(), "http://up/v1/items/a%2Fb");
        assert_eq!(target("http://up/v1", "/").unwrap(), "http://up/v1/");
        assert_eq!(target("http://up/v1", "/a.b/.well-known/...x").unwrap(), "http://up/v1/a.b/.well-known/...x");
        assert_eq!(target("http://up/v1", "//double").unwrap(), "http://up/v1//double");
        assert_eq!(Upstream::parse("http://up:81/v1").unwrap().host, "up:81");
    }

    #[test]
    fn refuses_every_way_out_of_the_base_path() {
        for path in [
            "/..",
            "/../admin",
            "/a/../../admin",
            "/.",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/.%2e/admin",
            "/%252e%252e/admin",
            "/%25252e%25252e/admin",
            "/..%2fadmin",
            "/a%2F..%2F..%2Fadmin",
            "/..%5cadmin",
            "/..\\admin",
            "/..;x/admin",
            "/%2e%2e;jsessionid=1/admin",
            "/%2525252e",
        ] {
            let error = target("http://up/v1", path);
            assert!(error.is_err(), "{path} gave {error:?}");
        }
        assert!(target("http://up/v1", "*").is_err());
    }

    #[test]
    fn refuses_upstream_urls_it_cannot_use() {
        for url in
            ["", "up:80", "/v1", "https://up", "http://u:p@up", "http://up/?q=1", "http://up/#f", "http://up/../x"]
        {
            assert!(Upstream::parse(url).is_err(), "{url}");
        }
    }
}
