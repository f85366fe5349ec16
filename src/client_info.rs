//! Who is logging in from where: the device information kept with a
//! session, with the client address read through trusted reverse proxies.
//!
//! The proxies' header (`X-Forwarded-For`, or `Forwarded` when configured;
//! never both) is believed only when the TCP peer is a configured proxy,
//! and then only up to the right-most address that is not itself a trusted
//! proxy: every hop left of it was written by the client, which can write
//! anything.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::{HeaderMap, HeaderName, header, request::Parts};
use ipnet::IpNet;

use crate::config::JwtAuth;

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// Who is logging in from where: the device information kept with a session.
///
/// Build it yourself:
///
/// ```
/// use tower_jwt_auth::ClientInfo;
///
/// let client = ClientInfo { user_agent: Some("curl/8.5".into()), ip: Some([192, 0, 2, 7].into()) };
/// assert_eq!(client.ip.map(|ip| ip.to_string()).as_deref(), Some("192.0.2.7"));
/// ```
///
/// or extract it in a login handler (the application state must give a
/// [`JwtAuth`] through `FromRef`, which reads `X-Forwarded-For` (or
/// `Forwarded`, see [`proxy_header`](crate::JwtAuthBuilder::proxy_header))
/// when the TCP peer is one of
/// [`trusted_proxies`](crate::JwtAuthBuilder::trusted_proxies)):
///
/// ```
/// use axum::{Router, extract::State, routing::post};
/// use tower_jwt_auth::{AuthError, ClientInfo, CookieTokens, JwtAuth, SigningKey};
///
/// async fn login(State(auth): State<JwtAuth>, client: ClientInfo) -> Result<CookieTokens, AuthError> {
///     // check the password first...
///     Ok(auth.login("alice", &(), client).await?.into_cookies())
/// }
///
/// let auth = JwtAuth::builder()
///     .signing_key(SigningKey::hs256("k", &[7; 32])?)
///     .trusted_proxies(["10.0.0.0/8"])
///     .build()?;
/// let app: Router = Router::new().route("/login", post(login)).with_state(auth);
/// // Serve with `into_make_service_with_connect_info::<SocketAddr>()` so the peer is known.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `User-Agent` header (truncated to 256 bytes).
    pub user_agent: Option<String>,
    /// The client's address: axum's `ConnectInfo` peer, or behind trusted
    /// proxies the address they report.
    pub ip: Option<IpAddr>,
}

/// Which header the trusted proxies write the client's address into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, AWS ALB, most others).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    Forwarded,
}

/// The proxies whose forwarding header is believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Only this one is read: a proxy passes the other through untouched,
    /// so the client could write anything there.
    header: ProxyHeader,
}

impl TrustedProxies {
    /// Parses IPs (`10.0.0.1`, `::1`) and CIDRs (`10.0.0.0/8`).
    pub(crate) fn parse<'a>(entries: impl IntoIterator<Item = &'a str>, header: ProxyHeader) -> Result<Self, String> {
        let nets = entries
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR block"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets, header })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in hops_nearest_first(headers, self.header) {
            match hop {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                // Unreadable (obfuscated, `unknown`): the last proxy we trust is all we know.
                None => return client,
            }
        }
        client
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `10.0.0.0/8` matches `::ffff:10.1.2.3`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses a request went through, nearest hop first (right to left,
/// last header line first), read lazily; `None` for an element that is not
/// an IP address.
fn hops_nearest_first(headers: &HeaderMap, header: ProxyHeader) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let name = match header {
        ProxyHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
        ProxyHeader::Forwarded => header::FORWARDED,
    };
    headers.get_all(name).into_iter().rev().filter_map(|v| v.to_str().ok()).flat_map(|v| v.rsplit(',')).map(
        move |element| match header {
            ProxyHeader::XForwardedFor => parse_node(element.trim()),
            ProxyHeader::Forwarded => element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| parse_node(value.trim().trim_matches('"')))
            })?,
        },
    )
}

/// `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

impl ClientInfo {
    /// Reads the user agent and, when present, axum's `ConnectInfo<SocketAddr>`
    /// as the client address, believing no forwarding header (see
    /// [`JwtAuth::client_info`] for that).
    pub fn from_parts(parts: &Parts) -> Self {
        Self::read(parts, &TrustedProxies::default())
    }

    fn read(parts: &Parts, proxies: &TrustedProxies) -> Self {
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| canonical(info.0.ip()));
        let ip = peer.map(|peer| proxies.client_ip(peer, &parts.headers));
        Self { user_agent, ip }
    }
}

impl JwtAuth {
    /// The client of a request: its user agent, and its address read through
    /// the configured [`trusted_proxies`](crate::JwtAuthBuilder::trusted_proxies).
    pub fn client_info(&self, parts: &Parts) -> ClientInfo {
        ClientInfo::read(parts, &self.inner.trusted_proxies)
    }
}

impl<S> FromRequestParts<S> for ClientInfo
where
    S: Send + Sync,
    JwtAuth: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(JwtAuth::from_ref(state).client_info(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7"], ProxyHeader::default()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.1.1.1");
        let xff = |v: &str| headers(&[("x-forwarded-for", v)]);
        // A spoofed left-most entry is ignored.
        assert_eq!(proxies.client_ip(proxy, &xff("6.6.6.6, 203.0.113.9")), ip("203.0.113.9"));
        // Trusted hops are skipped.
        assert_eq!(proxies.client_ip(proxy, &xff("203.0.113.9, 192.0.2.7, 10.2.2.2")), ip("203.0.113.9"));
        // Headers from an untrusted peer are not believed.
        assert_eq!(proxies.client_ip(ip("198.51.100.1"), &xff("203.0.113.9")), ip("198.51.100.1"));
        // All trusted: the left-most.
        assert_eq!(proxies.client_ip(proxy, &xff("10.9.9.9")), ip("10.9.9.9"));
        // Unreadable: the last trusted proxy.
        assert_eq!(proxies.client_ip(proxy, &xff("203.0.113.9, garbage")), proxy);
        // Several headers, in order.
        let two = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(proxies.client_ip(proxy, &two), ip("203.0.113.5"));
        // Forwarded when configured (and then only it), with ports and brackets.
        let proxies_rfc7239 = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7"], ProxyHeader::Forwarded).unwrap();
        let forwarded = headers(&[
            ("forwarded", r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https"#),
            ("x-forwarded-for", "198.51.100.77"),
        ]);
        assert_eq!(proxies_rfc7239.client_ip(proxy, &forwarded), ip("2001:db8::1"));
        // By default a client's own `Forwarded`, passed through by an
        // X-Forwarded-For proxy, is not believed.
        assert_eq!(proxies.client_ip(proxy, &forwarded), ip("198.51.100.77"));
        // IPv4-mapped peers match IPv4 blocks.
        assert_eq!(proxies.client_ip(ip("::ffff:10.0.0.1"), &xff("203.0.113.9")), ip("203.0.113.9"));
        assert!(TrustedProxies::parse(["10.0.0.0/33"], ProxyHeader::default()).is_err());
        assert!(TrustedProxies::parse(["proxy.local"], ProxyHeader::default()).is_err());
    }
}
