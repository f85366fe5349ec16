//! Arbitrary bytes where a client puts credentials: the `Authorization`
//! header, the `Cookie` header (whole, or as the access or the refresh
//! cookie's value), the CSRF-relevant headers, and `POST /auth/refresh`
//! (JSON body, form body, refresh cookie, tampered genuine refresh tokens),
//! and the double-submit `X-CSRF-Token` header next to genuine cookies.
//!
//! The first byte picks where the rest goes. Every response must be 2xx or
//! 4xx (never 5xx: the memory store cannot be unavailable) and a rejection
//! must not echo the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_jwt_auth_fuzz::{harness, request};

const JSON: &[u8] = b"application/json";
const FORM: &[u8] = b"application/x-www-form-urlencoded";

fn cookie(name: &str, value: &[u8]) -> Vec<u8> {
    [name.as_bytes(), b"=", value].concat()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let h = harness();
    let lossy = String::from_utf8_lossy(input);
    let (router, request) = match mode % 16 {
        // The Authorization header alone.
        0 => (&h.strict, request("GET", "/me", &[("authorization", input)], vec![])),
        // A whole Cookie header, on a safe and on an unsafe method.
        1 => (&h.strict, request("GET", "/me", &[("cookie", input)], vec![])),
        2 => (&h.strict, request("POST", "/write", &[("cookie", input)], vec![])),
        // The access cookie's value; the refresh cookie's value (transparent refresh).
        3 => (&h.strict, request("GET", "/me", &[("cookie", &cookie("__Host-access", input))], vec![])),
        4 => (&h.strict, request("GET", "/me", &[("cookie", &cookie("__Host-refresh", input))], vec![])),
        // CSRF probe: Origin, Sec-Fetch-Site, Host and the cookies from the input.
        5 => {
            let mut parts = input.splitn(4, |&b| b == 0);
            let origin = parts.next().unwrap_or_default();
            let site = parts.next().unwrap_or_default();
            let host = parts.next().unwrap_or_default();
            let cookies = parts.next().unwrap_or(b"__Host-refresh=x");
            let headers = [("origin", origin), ("sec-fetch-site", site), ("host", host), ("cookie", cookies)];
            (&h.strict, request("POST", "/write", &headers, vec![]))
        }
        // POST /auth/refresh: JSON body, form body, refresh cookie, JSON string.
        6 => (&h.strict, request("POST", "/auth/refresh", &[("content-type", JSON)], input.to_vec())),
        7 => (&h.strict, request("POST", "/auth/refresh", &[("content-type", FORM)], input.to_vec())),
        8 => (&h.strict, request("POST", "/auth/refresh", &[("cookie", &cookie("__Host-refresh", input))], vec![])),
        9 => {
            let body = serde_json::to_vec(&serde_json::json!({ "refresh_token": lossy })).expect("JSON");
            (&h.strict, request("POST", "/auth/refresh", &[("content-type", JSON)], body))
        }
        // A genuine refresh token with one of its four parts replaced.
        10 => {
            let Some((&which, rest)) = input.split_first() else { return };
            let mut parts: Vec<String> = h.refresh_token.split('.').map(str::to_owned).collect();
            let slot = usize::from(which) % parts.len();
            parts[slot] = String::from_utf8_lossy(rest).into_owned();
            let body = serde_json::to_vec(&serde_json::json!({ "refresh_token": parts.join(".") })).expect("JSON");
            (&h.strict, request("POST", "/auth/refresh", &[("content-type", JSON)], body))
        }
        // A genuine access token with the input appended or spliced in.
        11 => {
            let Some((&at, rest)) = input.split_first() else { return };
            let token = h.access_token.as_bytes();
            let at = usize::from(at) % (token.len() + 1);
            let value = [b"Bearer ", &token[..at], rest, &token[at..]].concat();
            (&h.strict, request("GET", "/me", &[("authorization", &value)], vec![]))
        }
        // Two Authorization headers, or one plus cookies.
        12 => {
            let mut parts = input.splitn(2, |&b| b == 0);
            let first = parts.next().unwrap_or_default();
            let second = parts.next().unwrap_or_default();
            let headers = [("authorization", first), ("authorization", second), ("cookie", second)];
            (&h.strict, request("GET", "/me", &headers, vec![]))
        }
        // Double-submit mode: a genuine access or refresh cookie and the input as X-CSRF-Token.
        13 | 14 => {
            let cookies = if mode % 16 == 13 {
                cookie("__Host-access", h.plain_access_token.as_bytes())
            } else {
                cookie("__Host-refresh", h.plain_refresh_token.as_bytes())
            };
            let headers = [("cookie", cookies.as_slice()), ("x-csrf-token", input)];
            (&h.plain, request("POST", "/write", &headers, vec![]))
        }
        // The optional layer, without the iss/aud requirement.
        _ => (&h.plain, request("POST", "/opt", &[("authorization", input), ("cookie", input)], vec![])),
    };
    h.send(router, request).check(input);
});
