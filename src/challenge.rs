//! The one routine that writes `WWW-Authenticate` challenges (RFC 7235
//! §2.1, RFC 6750 §3, RFC 9470 §3): parameters quoted and escaped so no
//! value, however odd, can break out of its quoted-string or the header.

use std::fmt::Display;

use http::HeaderValue;

/// A `Bearer` challenge being written.
pub(crate) struct Challenge {
    value: String,
    params: usize,
}

impl Challenge {
    /// `Bearer`, with `realm` first when given.
    pub(crate) fn bearer(realm: Option<&str>) -> Self {
        let mut challenge = Self { value: String::from("Bearer"), params: 0 };
        if let Some(realm) = realm {
            challenge.param("realm", realm);
        }
        challenge
    }

    fn name(&mut self, name: &str) {
        self.value.push_str(if self.params == 0 { " " } else { ", " });
        self.params += 1;
        self.value.push_str(name);
        self.value.push('=');
    }

    /// Appends `name="value"` as a quoted-string: `"` and `\` are escaped,
    /// and anything RFC 6750 does not allow in a value (control characters,
    /// non-ASCII) becomes `?`, so the header stays valid visible ASCII.
    pub(crate) fn param(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.value.push('"');
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.value.push('\\');
                    self.value.push(c);
                }
                ' ' | '!'..='~' => self.value.push(c),
                _ => self.value.push('?'),
            }
        }
        self.value.push('"');
        self
    }

    /// Appends `name=value` unquoted: for numbers (RFC 9470's `max_age`).
    pub(crate) fn token_param(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.name(name);
        self.value.push_str(&value.to_string());
        self
    }

    pub(crate) fn finish(self) -> HeaderValue {
        // Only visible ASCII and spaces were written.
        HeaderValue::try_from(self.value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_escaped_and_kept_ascii() {
        let mut challenge = Challenge::bearer(Some("my \"app\""));
        challenge
            .param("error", "invalid_token")
            .param("error_description", "a\\b\r\nSet-Cookie: x=ü")
            .token_param("max_age", 5);
        assert_eq!(
            challenge.finish(),
            r#"Bearer realm="my \"app\"", error="invalid_token", error_description="a\\b??Set-Cookie: x=?", max_age=5"#
        );
        assert_eq!(Challenge::bearer(None).finish(), "Bearer");
    }
}
