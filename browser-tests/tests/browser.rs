//! End-to-end tests of the demo page in real headless Chromium, driven over
//! WebDriver (`chromedriver` + `fantoccini`): HttpOnly cookies, transparent
//! refresh, parallel requests after expiry, CSRF from another origin, logout,
//! and the page's live panels (token countdown, rotations, parallel tabs,
//! refresh-token replay).
//!
//! Needs Chromium and chromedriver, found on PATH or at `$CHROMIUM` and
//! `$CHROMEDRIVER` (`./test` installs Debian's `chromium` and
//! `chromium-driver` when they are missing); without them every test fails,
//! saying how to install them. Each test starts its own demo process and its
//! own browser, on free loopback ports.

mod support;

use std::{collections::BTreeMap, time::Duration};

use axum::{Router, extract::Query, response::Html, routing::get};
use serde_json::Value;
use support::{
    browser::{Browser, PAGE_CEILING, unix_now, wait_until},
    demo::Demo,
};

const ACCESS: &str = "__Host-access";
const REFRESH: &str = "__Host-refresh";

/// Opens the demo page without its automatic `/me` at expiry (`?auto=0`),
/// so that the tests below see the cookie jar as the browser left it, and
/// waits for its script to have run.
async fn open_demo(browser: &Browser, demo: &Demo) {
    open_page(browser, &format!("{}/?auto=0", demo.origin())).await;
}

/// Opens the demo page as a visitor would: the page calls `/me` itself when
/// the access token expires.
async fn open_live_demo(browser: &Browser, demo: &Demo) {
    open_page(browser, &format!("{}/", demo.origin())).await;
}

async fn open_page(browser: &Browser, url: &str) {
    browser.goto(url).await;
    wait_until("the demo page", PAGE_CEILING, || async {
        let ready =
            browser.js("return document.readyState === 'complete' && !!document.getElementById('whoami')").await;
        (ready == true).then_some(())
    })
    .await;
}

/// Logs in through the page's form; answers the status and the text shown.
async fn login(browser: &Browser, user: &str, password: &str) -> (u16, String) {
    browser.fill("#username", user).await;
    browser.fill("#password", password).await;
    browser.click_for_result("#login-button", "login-status").await
}

/// Logs in as alice and waits for the sessions list the page loads after it.
async fn login_alice(browser: &Browser) {
    let sessions_before = browser.seq("sessions-status").await;
    let (status, text) = login(browser, "alice", "alice-pw").await;
    assert_eq!(status, 200, "login failed: {text}");
    assert!(text.contains("logged in as alice"), "{text}");
    wait_until("the sessions list after login", PAGE_CEILING, || async {
        (browser.seq("sessions-status").await > sessions_before).then_some(())
    })
    .await;
}

/// Clicks "Who am I" and answers the status and the JSON the page shows.
async fn who_am_i(browser: &Browser) -> (u16, Value) {
    let (status, text) = browser.click_for_result("#whoami", "me-output").await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("#me-output is not JSON ({e}): {text}"));
    (status, json)
}

/// Waits until the access token whose claims are `me` has expired by the
/// clock (`exp` passed) and the browser has dropped the access cookie
/// (its `Max-Age` is the access lifetime).
async fn wait_for_expiry(browser: &Browser, me: &Value) {
    let exp = me["exp"].as_u64().unwrap_or_else(|| panic!("no exp in {me}"));
    wait_until(&format!("exp {exp} to pass"), Duration::from_secs(10), || async { (unix_now() > exp).then_some(()) })
        .await;
    wait_until("the browser to drop the expired access cookie", PAGE_CEILING, || async {
        (!browser.cookie_values().await.contains_key(ACCESS)).then_some(())
    })
    .await;
}

fn count(cookies: &[support::browser::JarCookie], name: &str) -> usize {
    cookies.iter().filter(|c| c.name == name).count()
}

/// How many access and refresh cookies the jar holds.
fn session_cookies(cookies: &[support::browser::JarCookie]) -> usize {
    count(cookies, ACCESS) + count(cookies, REFRESH)
}

#[tokio::test]
async fn login_sets_httponly_cookies_that_scripts_cannot_read() {
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    open_demo(&browser, &demo).await;
    assert!(browser.text("#cookie-note").await.contains("HttpOnly"), "the page must say the cookies are HttpOnly");

    let (status, text) = login(&browser, "alice", "wrong").await;
    assert_eq!(status, 401, "wrong password: {text}");
    assert!(browser.cookies().await.is_empty(), "a failed login set cookies: {:?}", browser.cookies().await);

    login_alice(&browser).await;
    let cookies = browser.cookies().await;
    for name in [ACCESS, REFRESH] {
        let cookie = cookies.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} in {cookies:?}"));
        assert!(!cookie.value.is_empty(), "{cookie:?}");
        assert!(cookie.http_only, "{name} must be HttpOnly: {cookie:?}");
        assert!(cookie.secure, "{name} must be Secure: {cookie:?}");
        assert_eq!(cookie.path.as_deref(), Some("/"), "{cookie:?}");
        assert!(matches!(cookie.same_site.as_deref(), Some("Lax" | "Strict")), "{name} SameSite: {cookie:?}");
        // `__Host-`: host-only, no Domain attribute (WebDriver reports the host).
        assert!(matches!(cookie.domain.as_deref(), None | Some("localhost")), "{cookie:?}");
    }
    assert_eq!(count(&cookies, ACCESS), 1);
    assert_eq!(count(&cookies, REFRESH), 1);

    // Scripts cannot see them; the page says so too.
    let script_view = browser.js("return document.cookie").await;
    let script_view = script_view.as_str().expect("document.cookie is a string");
    for cookie in cookies.iter().filter(|c| [ACCESS, REFRESH].contains(&c.name.as_str())) {
        assert!(!script_view.contains(&cookie.name), "document.cookie shows {}: {script_view:?}", cookie.name);
        assert!(!script_view.contains(&cookie.value), "document.cookie shows a token: {script_view:?}");
    }
    // Only cookies that are not HttpOnly (none today) may show there.
    let readable: Vec<String> =
        cookies.iter().filter(|c| !c.http_only).map(|c| format!("{}={}", c.name, c.value)).collect();
    assert_eq!(script_view, readable.join("; "));
    assert_eq!(browser.text("#document-cookie").await, serde_json::to_string(script_view).unwrap());

    let (status, me) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["sub"], "alice");
    assert_eq!((me["role"].as_str(), me["scope"].as_str()), (Some("admin"), Some("profile admin")));
    assert!(me["exp"].as_u64() > me["iat"].as_u64(), "{me}");
    let current = browser.attr("#sessions li.session[data-current='true']", "data-id").await;
    assert_eq!(current.as_deref(), me["sid"].as_str(), "the sessions list marks this session as current");
    assert_eq!(browser.client.find_all(fantoccini::Locator::Css("#sessions li.session")).await.unwrap().len(), 1);
}

/// A demo with 1-second access tokens, a browser logged in as alice on its
/// page, her first `/me` answer and her refresh cookie.
async fn logged_in_with_one_second_access() -> (Demo, Browser, Value, String) {
    let demo = Demo::start(&[("ACCESS_TTL_SECS", "1")]);
    let browser = Browser::start().await;
    open_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let (status, first) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{first}");
    let refresh_before = browser.cookie_values().await.get(REFRESH).cloned().expect("refresh cookie after login");
    (demo, browser, first, refresh_before)
}

#[tokio::test]
async fn who_am_i_after_expiry_refreshes_and_rotates_the_refresh_cookie() {
    let (_demo, browser, first, refresh_before) = logged_in_with_one_second_access().await;

    wait_for_expiry(&browser, &first).await;
    let (status, second) = who_am_i(&browser).await;
    assert_eq!(status, 200, "who am I after expiry must still work: {second}");
    assert_eq!(second["sub"], "alice");
    assert_eq!(second["sid"], first["sid"], "same session, new access token");
    assert!(second["exp"].as_u64() > first["exp"].as_u64(), "a new access token: {first} then {second}");
    assert_ne!(second["jti"], first["jti"]);
    let jar = browser.cookies().await;
    assert_eq!(count(&jar, REFRESH), 1, "{jar:?}");
    let refresh_after = jar.iter().find(|c| c.name == REFRESH).map(|c| c.value.clone()).unwrap();
    assert_ne!(refresh_after, refresh_before, "the refresh cookie must have rotated");
    assert!(jar.iter().all(|c| c.http_only), "rotated cookies stay HttpOnly: {jar:?}");

    // The rotated cookie is the live one: it refreshes again.
    wait_for_expiry(&browser, &second).await;
    let (status, third) = who_am_i(&browser).await;
    assert_eq!(status, 200, "second refresh: {third}");
    assert_eq!(third["sid"], first["sid"]);
    let refresh_third = browser.cookie_values().await.get(REFRESH).cloned().expect("refresh cookie");
    assert!(refresh_third != refresh_after && refresh_third != refresh_before, "rotated again");
}

#[tokio::test]
async fn parallel_fetches_after_expiry_all_succeed_and_leave_one_refresh_cookie() {
    let (_demo, browser, first, refresh_before) = logged_in_with_one_second_access().await;

    wait_for_expiry(&browser, &first).await;
    // Five "tabs" at once, all carrying the same refresh cookie and no access cookie.
    let results = browser
        .js_async(
            r#"const done = arguments[arguments.length - 1];
            Promise.all([0, 1, 2, 3, 4].map(() =>
                fetch("/me", { cache: "no-store" }).then(async (r) => ({ status: r.status, body: await r.text() }))))
            .then(done, (e) => done({ error: String(e) }));"#,
        )
        .await;
    let results = results.as_array().unwrap_or_else(|| panic!("Promise.all failed: {results}"));
    assert_eq!(results.len(), 5);
    for result in results {
        assert_eq!(result["status"], 200, "every parallel fetch must succeed: {results:?}");
        let me: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
        assert_eq!(me["sid"], first["sid"], "same session for every racer: {results:?}");
    }

    let jar = browser.cookies().await;
    assert_eq!(count(&jar, REFRESH), 1, "exactly one refresh cookie: {jar:?}");
    let refresh_after = jar.iter().find(|c| c.name == REFRESH).map(|c| c.value.clone()).unwrap();
    assert_ne!(refresh_after, refresh_before, "the refresh cookie must have rotated");

    // Nobody was taken for a thief: the session is still the only one, and
    // the converged cookie refreshes again once the new access token expires.
    let (status, sessions) = browser.click_for_result("#load-sessions", "sessions-status").await;
    assert_eq!(status, 200, "{sessions}");
    assert!(sessions.starts_with("1 live session"), "{sessions}");
    let (status, second) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{second}");
    wait_for_expiry(&browser, &second).await;
    let (status, third) = who_am_i(&browser).await;
    assert_eq!(status, 200, "the cookie left by the racers must still refresh: {third}");
    assert_eq!(third["sid"], first["sid"]);
}

/// A page from another origin that submits a form to `target` as soon as it
/// loads. The form has no field: its body is empty, as a cookie refresh's is.
async fn start_attacker() -> u16 {
    async fn page(Query(query): Query<BTreeMap<String, String>>) -> Html<String> {
        let target = query.get("target").cloned().unwrap_or_default();
        Html(format!(
            r#"<!doctype html><title>totally harmless</title>
            <form id="f" method="POST" action="{target}"></form>
            <script>document.getElementById("f").submit();</script>"#
        ))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the attacker's server");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/", get(page))).await });
    port
}

/// Lets the attacker page at `attacker_origin` post its form to `target`
/// and answers the HTTP status the browser got for that navigation.
async fn forged_post(browser: &Browser, attacker_origin: &str, target: &str) -> u16 {
    browser.goto(&format!("{attacker_origin}/?target={target}")).await;
    wait_until(&format!("the forged POST to land on {target}"), PAGE_CEILING, || async {
        (browser.current_url().await == target && browser.js("return document.readyState").await == "complete")
            .then_some(())
    })
    .await;
    let status = browser.js("return performance.getEntriesByType('navigation')[0].responseStatus").await;
    status.as_u64().unwrap_or_else(|| panic!("no navigation status: {status}")) as u16
}

#[tokio::test]
async fn a_page_on_another_origin_cannot_log_the_user_out_with_a_form_post() {
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    let attacker = start_attacker().await;
    open_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let (status, me) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{me}");
    let jar_before = browser.cookie_values().await;
    assert!(jar_before.contains_key(ACCESS) && jar_before.contains_key(REFRESH), "{jar_before:?}");

    // Logging out, and also forcing a rotation of the refresh cookie.
    for endpoint in ["logout", "logout-all", "auth/refresh"] {
        let target = format!("{}/{endpoint}", demo.origin());
        // Another site (127.0.0.1 vs localhost): SameSite keeps the cookies
        // home, so the demo sees no credentials (400 invalid_grant for the
        // refresh endpoint, 401 elsewhere) or refuses the request.
        let cross_site = forged_post(&browser, &format!("http://127.0.0.1:{attacker}"), &target).await;
        assert!(matches!(cross_site, 400 | 401 | 403), "cross-site form POST to /{endpoint} answered {cross_site}");
        // Same site, other origin (another port of localhost): the cookies
        // ride along, so only the CSRF check stands in the way.
        let same_site = forged_post(&browser, &format!("http://localhost:{attacker}"), &target).await;
        assert_eq!(same_site, 403, "cross-origin form POST to /{endpoint} with the cookies must be refused");
        let body = browser.js("return document.body.innerText").await;
        assert!(body.as_str().unwrap_or_default().contains("access_denied"), "{body}");
    }

    open_demo(&browser, &demo).await;
    assert_eq!(browser.cookie_values().await, jar_before, "the forged POSTs changed the cookies");
    let (status, after) = who_am_i(&browser).await;
    assert_eq!(status, 200, "the session must survive the forged POSTs: {after}");
    assert_eq!(after["sid"], me["sid"]);
    assert_eq!(after["jti"], me["jti"], "same access token: nothing was rotated");
}

#[tokio::test]
async fn logout_removes_both_cookies_from_the_jar() {
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    open_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let (status, me) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(session_cookies(&browser.cookies().await), 2);

    let (status, text) = browser.click_for_result("#logout", "action-status").await;
    assert_eq!(status, 204, "logout: {text}");
    let jar = browser.cookies().await;
    assert_eq!(session_cookies(&jar), 0, "logout left cookies in the jar: {jar:?}");

    let (status, after) = who_am_i(&browser).await;
    assert_eq!(status, 401, "logged out: {after}");
    assert_eq!(session_cookies(&browser.cookies().await), 0, "a 401 after logout set cookies");
}

#[tokio::test]
async fn sessions_list_revokes_another_device_and_logout_everywhere_ends_them_all() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{}", demo.port);
    // Another device of alice's, logged in with bearer tokens.
    let other_device = || async {
        let response = http
            .post(format!("{api}/login"))
            .header("User-Agent", "other-device")
            .json(&serde_json::json!({"username": "alice", "password": "alice-pw", "mode": "token"}))
            .send()
            .await
            .expect("token login");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    };
    let bearer_status = |token: String| {
        let request = http.get(format!("{api}/me")).bearer_auth(token);
        async move { request.send().await.expect("GET /me").status().as_u16() }
    };
    let device = other_device().await;

    let browser = Browser::start().await;
    open_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let items = browser.client.find_all(fantoccini::Locator::Css("#sessions li.session")).await.unwrap();
    assert_eq!(items.len(), 2, "browser + other device");
    let other = browser.attr("#sessions li.session[data-current='false']", "data-id").await.expect("the other device");
    assert!(browser.text("#sessions li.session[data-current='false']").await.contains("other-device"));

    let sessions_before = browser.seq("sessions-status").await;
    let (status, text) = browser.click_for_result(&format!("button.revoke[data-id='{other}']"), "action-status").await;
    assert_eq!(status, 204, "revoke: {text}");
    wait_until("the sessions list after revoking", PAGE_CEILING, || async {
        (browser.seq("sessions-status").await > sessions_before).then_some(())
    })
    .await;
    let items = browser.client.find_all(fantoccini::Locator::Css("#sessions li.session")).await.unwrap();
    assert_eq!(items.len(), 1, "only this browser's session is left");
    assert_eq!(bearer_status(device).await, 401, "the revoked device's access token must be refused");

    let third = other_device().await;
    assert_eq!(bearer_status(third.clone()).await, 200);
    let (status, text) = browser.click_for_result("#logout-all", "action-status").await;
    assert_eq!(status, 204, "logout everywhere: {text}");
    let jar = browser.cookies().await;
    assert_eq!(session_cookies(&jar), 0, "logout everywhere left cookies: {jar:?}");
    assert_eq!(bearer_status(third).await, 401, "logout everywhere must end the other devices too");
    let (status, after) = who_am_i(&browser).await;
    assert_eq!(status, 401, "{after}");
}

// ---------------------------------------------------------------- the live page

/// `data-NAME` of the element `css`, parsed as a number.
async fn number(browser: &Browser, css: &str, name: &str) -> Option<u64> {
    browser.attr(css, &format!("data-{name}")).await.and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_page_counts_the_access_token_lifetime_down() {
    let demo = Demo::start(&[("ACCESS_TTL_SECS", "60")]);
    let browser = Browser::start().await;
    open_live_demo(&browser, &demo).await;
    assert_eq!(browser.text("#lifetime").await, "–", "no token before login");
    login_alice(&browser).await;

    let first = wait_until("the countdown after login", PAGE_CEILING, || async {
        number(&browser, "#lifetime", "left").await.filter(|left| *left > 0)
    })
    .await;
    assert!(first <= 60, "an access token of 60 s has at most 60 s left: {first}");
    let shown = browser.text("#lifetime").await;
    assert!(shown.ends_with(" s") && shown.trim_end_matches(" s").parse::<u64>().is_ok(), "{shown}");
    assert!(browser.text("#token-info").await.contains("lives 60 s"), "{}", browser.text("#token-info").await);
    let later = wait_until("the countdown to tick", PAGE_CEILING, || async {
        number(&browser, "#lifetime", "left").await.filter(|left| *left < first)
    })
    .await;
    assert!(later > 0, "still valid: {later}");
}

#[tokio::test]
async fn the_page_shows_each_transparent_rotation_as_it_happens() {
    let demo = Demo::start(&[("ACCESS_TTL_SECS", "1")]);
    let browser = Browser::start().await;
    open_live_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let (status, me) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{me}");
    // On a loaded machine the token may already have expired (and rotated)
    // by now: count the rotations logged so far with the cookie they left.
    let (logged_before, refresh_before) = wait_until("a steady jar", PAGE_CEILING, || async {
        let count = number(&browser, "#rotation-count", "count").await.unwrap_or(0);
        let cookie = browser.cookie_values().await.get(REFRESH).cloned()?;
        (number(&browser, "#rotation-count", "count").await.unwrap_or(0) == count).then_some((count, cookie))
    })
    .await;

    // The token expires; the page's own /me is refreshed by the layer.
    wait_until("a rotation in the log", PAGE_CEILING, || async {
        number(&browser, "#rotation-count", "count").await.filter(|count| *count > logged_before)
    })
    .await;
    let rotation = "#rotations li:first-child";
    assert_eq!(browser.attr(rotation, "data-sid").await.as_deref(), me["sid"].as_str(), "same session");
    let (previous, jti) = (browser.attr(rotation, "data-previous").await, browser.attr(rotation, "data-jti").await);
    assert!(previous.is_some() && jti.is_some() && previous != jti, "a new token id: {previous:?} then {jti:?}");
    assert!(browser.text(rotation).await.contains("rotated the refresh cookie"), "{}", browser.text(rotation).await);
    let jar = browser.cookies().await;
    assert_eq!(count(&jar, REFRESH), 1, "{jar:?}");
    // The rotation logged may be the one whose cookie was read above (a
    // response lands in the jar before the page logs it): the next one, a
    // second later, rotates it for sure.
    wait_until("the refresh cookie rotated", PAGE_CEILING, || async {
        browser.cookie_values().await.get(REFRESH).filter(|now| **now != refresh_before).map(drop)
    })
    .await;
}

#[tokio::test]
async fn the_parallel_tabs_button_reports_every_request_on_one_successor() {
    let demo = Demo::start(&[("ACCESS_TTL_SECS", "1")]);
    let browser = Browser::start().await;
    open_live_demo(&browser, &demo).await;
    login_alice(&browser).await;

    let (status, text) = browser.click_for_result("#parallel", "parallel-status").await;
    assert_eq!(status, 200, "parallel tabs: {text}");
    let status_of = |name: &'static str| {
        let browser = &browser;
        async move { browser.attr("#parallel-status", name).await.unwrap_or_default() }
    };
    assert_eq!(status_of("data-n").await, "5");
    assert_eq!(status_of("data-ok").await, "5", "every request succeeds: {text}");
    assert_eq!(status_of("data-successors").await, "1", "one successor for all: {text}");
    assert_eq!(status_of("data-rotated").await, "true", "the requests were sent after expiry: {text}");
    assert!(text.starts_with("5/5 succeeded; all on one successor"), "{text}");
    let items = browser.client.find_all(fantoccini::Locator::Css("#parallel-results li")).await.unwrap();
    assert_eq!(items.len(), 5);

    let jar = browser.cookies().await;
    assert_eq!(count(&jar, REFRESH), 1, "exactly one refresh cookie: {jar:?}");
    // Nobody was taken for a thief: the session lives on.
    let (status, sessions) = browser.click_for_result("#load-sessions", "sessions-status").await;
    assert_eq!(status, 200, "{sessions}");
    assert!(sessions.starts_with("1 live session"), "{sessions}");
}

#[tokio::test]
async fn replaying_an_old_refresh_token_from_the_page_ends_that_session_only() {
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    open_live_demo(&browser, &demo).await;
    login_alice(&browser).await;
    let (status, me) = who_am_i(&browser).await;
    assert_eq!(status, 200, "{me}");

    let (status, text) = browser.click_for_result("#replay", "replay-status").await;
    assert_eq!(status, 400, "the replay answers 400 invalid_grant: {text}");
    assert!(text.starts_with("theft detected: invalid_grant"), "{text}");
    assert_eq!(browser.attr("#replay-status", "data-ended").await.as_deref(), Some("true"), "{text}");
    let log = browser.text("#replay-log").await;
    assert!(log.contains("device B refreshes (2) → 200"), "{log}");
    assert!(log.contains("already used → 400 invalid_grant"), "{log}");
    assert!(log.contains("device B's newest access token on /me → 401"), "{log}");

    let device = browser.attr("#replay-status", "data-sid").await.expect("device B's session id");
    assert_ne!(Some(device.as_str()), me["sid"].as_str());
    let items = browser.client.find_all(fantoccini::Locator::Css("#sessions li.session")).await.unwrap();
    assert_eq!(items.len(), 1, "only this browser's session is left");
    assert_eq!(browser.attr("#sessions li.session", "data-id").await.as_deref(), me["sid"].as_str());
    let (status, after) = who_am_i(&browser).await;
    assert_eq!(status, 200, "this browser's session is untouched: {after}");
    assert_eq!(after["sid"], me["sid"]);
}
