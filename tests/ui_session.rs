//! The web UI's sessions over plain HTTP against a real `gantry server`:
//! no data without a session, the cookie's flags, CSRF on every changing
//! form, revocation ending sessions, logout, and why a queued run waits.
//! The same in a real browser: tests/ui.rs.

mod support;

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header;
use support::*;

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signs in with `token`; the session cookie (`name=value`).
fn login(server: &Server, token: &str) -> String {
    let response = client()
        .post(format!("{}/login", server.url))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(response.status(), 303, "login with a valid token");
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

fn get(server: &Server, cookie: Option<&str>, path: &str) -> Response {
    let mut request = client().get(format!("{}{path}", server.url));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().unwrap()
}

fn post(server: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> Response {
    client()
        .post(format!("{}{path}", server.url))
        .header(header::COOKIE, cookie)
        .form(form)
        .send()
        .unwrap()
}

/// The CSRF token the page's forms carry.
fn csrf(server: &Server, cookie: &str) -> String {
    let page = get(server, Some(cookie), "/tokens").text().unwrap();
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

fn worker_drained(server: &Server, id: &str) -> bool {
    server.api_get(&format!("/workers/{id}"))["drain"] == true
}

#[test]
fn no_data_without_a_session_and_no_change_without_the_csrf_token() {
    let server = Server::start();
    let pool = server.create_pool("secret-pool-name");
    register_raw(&server, &pool, "ui-session-nonce-1");
    let worker = server.api_get("/workers")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A run that waits: the only worker is a hand-registered one that never polls… but
    // it counts as idle, so use a pool without workers for the "why".
    let empty = server.create_pool("empty");
    let waiting = server.submit(&empty.name, &["true"]);

    let admin_id = server.api_get("/tokens")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = format!("gantry_session=v1.{admin_id}.99999999999999.00ff.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for cookie in [None, Some(forged.as_str())] {
        for path in [
            "/".to_string(),
            "/runs".into(),
            format!("/runs/{waiting}"),
            format!("/runs/{waiting}/events?from=0"),
            format!("/runs/{waiting}/log?before=1"),
            "/pools/secret-pool-name".into(),
            "/stacks".into(),
            "/tokens".into(),
            "/stacks/any/state/1".into(),
            "/stacks/any/diff?from=1&to=2".into(),
        ] {
            let response = get(&server, cookie, &path);
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| l.to_str().unwrap().to_string());
            let body = response.text().unwrap();
            match path.as_str() {
                // The login form, and nothing else.
                "/" => {
                    assert_eq!(status, 200);
                    assert!(body.contains("name=\"token\" type=\"password\""), "{body}");
                }
                p if p.contains("/events") => assert_eq!(status, 401, "{path}"),
                _ => assert_eq!(
                    (status, location.as_deref()),
                    (303, Some("/")),
                    "{path} without a session"
                ),
            }
            for secret in [&waiting, "secret-pool-name", &worker, &admin_id] {
                assert!(!body.contains(secret), "{path} shows {secret}: {body}");
            }
        }
    }

    // A wrong token: refused, and counted as a failed authentication.
    let refused = client()
        .post(format!("{}/login", server.url))
        .form(&[("token", "not-a-valid-token")])
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());

    let cookie = login(&server, ADMIN_TOKEN);
    let page = get(&server, Some(&cookie), "/");
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = page.text().unwrap();
    assert!(
        body.contains("secret-pool-name"),
        "the overview shows the pool"
    );
    assert!(
        !body.contains("<script>") && !body.contains(" style="),
        "no inline script or style"
    );

    // Why the run waits.
    let run_page = get(&server, Some(&cookie), &format!("/runs/{waiting}"))
        .text()
        .unwrap();
    assert!(
        run_page.contains("no worker in pool empty is connected"),
        "{run_page}"
    );

    // Changing forms need the session's CSRF token: without it, or with
    // another session's, nothing happens.
    let drain = format!("/workers/{worker}/drain");
    let other = csrf(&server, &login(&server, ADMIN_TOKEN));
    for form in [
        vec![],
        vec![("csrf", "forged")],
        vec![("csrf", other.as_str())],
    ] {
        let response = post(&server, &cookie, &drain, &form);
        assert_eq!(response.status(), 403, "drain with {form:?}");
        assert!(!worker_drained(&server, &worker));
    }
    let token = csrf(&server, &cookie);
    let response = post(&server, &cookie, &drain, &[("csrf", &token)]);
    assert_eq!(response.status(), 303);
    assert!(worker_drained(&server, &worker));
    let response = post(
        &server,
        &cookie,
        &format!("/workers/{worker}/undrain"),
        &[("csrf", &token)],
    );
    assert_eq!(response.status(), 303);
    assert!(!worker_drained(&server, &worker));

    // Logout clears the cookie.
    let response = post(&server, &cookie, "/logout", &[("csrf", &token)]);
    assert_eq!(response.status(), 303);
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("gantry_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[test]
fn a_session_ends_with_its_token_and_its_cookie_has_the_right_flags() {
    let server = Server::start();
    let created = server.cli_json(&["token", "create", "browser"]);
    let token = created["token"].as_str().unwrap();
    let response = client()
        .post(format!("{}/login", server.url))
        .form(&[("token", token)])
        .send()
        .unwrap();
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert_eq!(get(&server, Some(&cookie), "/runs").status(), 200);

    let id = created["id"].as_str().unwrap();
    assert!(server.cli(&["token", "revoke", id]).status.success());
    let after = get(&server, Some(&cookie), "/runs");
    assert_eq!(
        after.status(),
        303,
        "a revoked token's session ends at once"
    );

    // Under HTTPS the cookie is Secure.
    let https = Server::start_args(&["--tls-dev"]);
    let response = client()
        .post(format!("{}/login", https.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .unwrap();
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");
}

#[test]
fn pool_reset_and_cycle_and_stack_unlock_from_the_forms() {
    let server = Server::start();
    let pool = server.create_pool("web");
    let cookie = login(&server, ADMIN_TOKEN);
    let token = csrf(&server, &cookie);

    // Reset with a new CSR: the new token is shown once, on this page only.
    let csr = gantry_pki::generate(2048, "web").unwrap().csr_pem;
    let response = post(
        &server,
        &cookie,
        "/pools/web/reset",
        &[("csrf", &token), ("csr", &csr)],
    );
    assert_eq!(response.status(), 200);
    let page = response.text().unwrap();
    let at = page.find("data-token=\"pool\">").expect("the new token") + 18;
    let new_token = &page[at..at + page[at..].find('<').unwrap()];
    assert_ne!(new_token, pool.token);
    assert_eq!(server.api_get("/pools/web")["generation"], 2);
    let pool_page = get(&server, Some(&cookie), "/pools/web").text().unwrap();
    assert!(!pool_page.contains(new_token), "shown once");

    let response = post(&server, &cookie, "/pools/web/cycle", &[("csrf", &token)]);
    assert_eq!(response.status(), 303);
    assert!(server.api_get("/pools/web")["cycled_at"].is_string());

    // A stack whose state someone locked: the holder is shown, and unlocked.
    let http = server.http();
    let created = http
        .post(format!("{}/api/v1/stacks", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "s", "pool": "web", "git_url": "https://git.example.invalid/x.git"}))
        .send()
        .unwrap();
    assert!(created.status().is_success());
    let locked = http
        .request(
            reqwest::Method::from_bytes(b"LOCK").unwrap(),
            format!("{}/api/v1/stacks/s/state", server.url),
        )
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"ID":"lock-1","Who":"alice@laptop"}"#)
        .send()
        .unwrap();
    assert!(locked.status().is_success());
    let page = get(&server, Some(&cookie), "/stacks/s").text().unwrap();
    assert!(
        page.contains("data-lock=\"held\"") && page.contains("alice@laptop"),
        "{page}"
    );
    // Without the CSRF token, nothing happens.
    assert_eq!(
        post(&server, &cookie, "/stacks/s/unlock", &[]).status(),
        403
    );
    assert_eq!(
        post(&server, &cookie, "/stacks/s/runs", &[("type", "proposed")]).status(),
        403
    );
    assert!(server.api_get("/runs").as_array().unwrap().is_empty());
    assert_eq!(
        post(&server, &cookie, "/stacks/s/unlock", &[("csrf", &token)]).status(),
        303
    );
    let page = get(&server, Some(&cookie), "/stacks/s").text().unwrap();
    assert!(page.contains("data-lock=\"free\""), "{page}");
}
