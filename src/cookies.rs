//! Building, reading and clearing the access and refresh cookies.
//!
//! Defaults: `__Host-` names, `HttpOnly`, `Secure`, `Path=/`, `SameSite=Lax`,
//! no `Domain` (which `__Host-` forbids anyway).

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};

/// How the auth cookies are named and flagged.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) access_name: String,
    pub(crate) refresh_name: String,
    pub(crate) same_site: SameSite,
    pub(crate) secure: bool,
    /// The page-readable double-submit CSRF cookie, when that mode is on.
    pub(crate) csrf_name: Option<String>,
}

impl CookieConfig {
    /// `Set-Cookie` for a cookie living `max_age`.
    pub(crate) fn set(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        header_value(&self.build(name, value).max_age(seconds(max_age)).build())
    }

    /// `Set-Cookie` for a cookie scripts may read (the CSRF token): not `HttpOnly`.
    pub(crate) fn set_readable(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        header_value(&self.build(name, value).http_only(false).max_age(seconds(max_age)).build())
    }

    /// `Set-Cookie` that removes the cookie: same attributes, empty value,
    /// `Max-Age=0` and an expiry in the past.
    pub(crate) fn clear(&self, name: &str) -> HeaderValue {
        let mut cookie = self.build(name, "").build();
        cookie.make_removal();
        header_value(&cookie)
    }

    fn build<'a>(&self, name: &'a str, value: &'a str) -> cookie::CookieBuilder<'a> {
        Cookie::build((name, value)).http_only(true).secure(self.secure).path("/").same_site(self.same_site)
    }

    /// Appends the removal of both cookies to `headers`.
    pub(crate) fn clear_both(&self, headers: &mut HeaderMap) {
        headers.append(header::SET_COOKIE, self.clear(&self.access_name));
        headers.append(header::SET_COOKIE, self.clear(&self.refresh_name));
        if let Some(csrf) = &self.csrf_name {
            headers.append(header::SET_COOKIE, self.clear(csrf));
        }
    }
}

/// A `Max-Age` (lifetimes are capped at a century, far below `i64::MAX` seconds).
fn seconds(max_age: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(max_age.as_secs().min(i64::MAX as u64) as i64)
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // Names are validated at build time and values are base64url/JWT text.
    HeaderValue::try_from(cookie.to_string()).expect("cookie names and values are visible ASCII")
}

/// The value of the first cookie called `name` in the request's `Cookie`
/// headers. Read as bytes: another cookie with non-ASCII bytes in the same
/// header (browsers send them) must not hide ours.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().flat_map(|value| value.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key.trim_ascii() != name.as_bytes() {
            return None;
        }
        std::str::from_utf8(value.trim_ascii()).ok()
    })
}

/// Whether `name` can be a cookie name (an RFC 6265 token).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CookieConfig {
        CookieConfig {
            access_name: "__Host-access".into(),
            refresh_name: "__Host-refresh".into(),
            same_site: SameSite::Lax,
            secure: true,
            csrf_name: None,
        }
    }

    #[test]
    fn cookies_carry_the_secure_attributes() {
        let set = config().set("__Host-access", "abc", Duration::from_secs(60));
        let set = set.to_str().unwrap();
        for attr in ["__Host-access=abc", "HttpOnly", "Secure", "Path=/", "SameSite=Lax", "Max-Age=60"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        assert!(!set.contains("Domain"));
        let clear = config().clear("__Host-refresh");
        let clear = clear.to_str().unwrap();
        for attr in ["__Host-refresh=", "HttpOnly", "Secure", "Path=/", "SameSite=Lax", "Max-Age=0"] {
            assert!(clear.contains(attr), "{clear} lacks {attr}");
        }
    }

    #[test]
    fn set_cookie_values_are_those_of_the_cookie_crate() {
        for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
            for secure in [true, false] {
                let config = CookieConfig { same_site, secure, ..config() };
                for (name, value, secs) in [
                    ("__Host-access", "a.b-c_d", 900),
                    ("__Host-refresh", "", 0),
                    ("x", "y", 1 << 40),
                    ("z", "9", u64::MAX),
                ] {
                    let max_age = Duration::from_secs(secs);
                    let crate_made = |http_only: bool| {
                        let cookie = config
                            .build(name, value)
                            .http_only(http_only)
                            // Clamped, never wrapped to a negative (deleting) Max-Age.
                            .max_age(cookie::time::Duration::seconds(secs.min(i64::MAX as u64) as i64))
                            .build();
                        cookie.to_string()
                    };
                    assert_eq!(config.set(name, value, max_age).to_str().unwrap(), crate_made(true));
                    assert_eq!(config.set_readable(name, value, max_age).to_str().unwrap(), crate_made(false));
                }
            }
        }
    }

    #[test]
    fn finds_cookies_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-access=tok"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Host-refresh=r; x"));
        assert_eq!(find(&headers, "__Host-access"), Some("tok"));
        assert_eq!(find(&headers, "__Host-refresh"), Some("r"));
        assert_eq!(find(&headers, "missing"), None);
        assert!(valid_name("__Host-access") && !valid_name("a b") && !valid_name(""));
    }
}
