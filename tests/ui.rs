//! The web UI in a real headless Chromium (WebDriver), against a real
//! `gantry server` and real launchers: login and logout, the overview,
//! drain and undrain, tokens, a log growing while the run page is open,
//! stop by keyboard, confirm and discard with a real Terraform, stacks and
//! state diffs, and a 375 px wide page. Each page is screenshotted (see
//! `Browser::screenshot`; docs/ui.md shows them). The session and CSRF
//! rules over plain HTTP: tests/ui_session.rs.

mod support;
mod tf;

#[path = "support/browser.rs"]
mod browser;

use std::time::Duration;

use browser::{Browser, ENTER, TAB};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn signed_in(server: &Server) -> Browser {
    let b = Browser::start(&server.url, 1280, 900);
    b.goto("/");
    b.fill("#token", ADMIN_TOKEN);
    b.click("main button[type=submit]");
    b.wait_text("h1", "Overview", WAIT);
    b
}

fn count(b: &Browser, pool: &str, what: &str) -> String {
    b.text(&format!("[data-pool={pool}] [data-count={what}]"))
        .unwrap_or_default()
}

#[test]
#[ignore = "slow: Chromium"]
fn login_overview_drain_undrain_tokens_and_logout() {
    if !browser::available() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("web");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let run = server.submit("web", &["sh", "-c", "echo hello from the run"]);
    server.wait_run_end(&run, WAIT);

    let b = Browser::start(&server.url, 1280, 900);
    b.goto("/");
    assert!(b.exists("input#token[name=token][type=password]"));
    assert!(b.exists("label[for=token]"), "the token input has a label");
    b.screenshot("login");
    b.fill("#token", "not-a-valid-token-at-all");
    b.click("main button[type=submit]");
    b.wait_text("[role=alert]", "not valid", WAIT);
    b.fill("#token", ADMIN_TOKEN);
    b.click("main button[type=submit]");
    b.wait_text("h1", "Overview", WAIT);
    assert_eq!(
        b.js("return document.cookie;"),
        "",
        "the session cookie is HttpOnly"
    );
    let script = "return document.documentElement.getAttribute('data-ui-script');";
    assert_eq!(b.js(script), "on", "ui.js runs under the CSP");

    // The pool with its worker, and the run.
    wait_for("the overview to show the worker", WAIT, || {
        b.goto("/");
        (count(&b, "web", "total") == "1" && count(&b, "web", "idle") == "1").then_some(())
    });
    assert!(b.exists(&format!("tr[data-run='{run}']")));
    b.screenshot("overview");

    // Drain and undrain from the pool page.
    b.click("[data-pool=web] h3 a");
    b.wait_text("h1", "Pool web", WAIT);
    let worker = server.api_get("/workers")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let row = format!("tr[data-worker='{worker}']");
    b.wait_text(&row, "idle", WAIT);
    b.click(&format!("{row} form button"));
    b.wait_text(&format!("{row} .badge"), "drained", WAIT);
    assert_eq!(server.api_get(&format!("/workers/{worker}"))["drain"], true);
    b.screenshot("pool");
    b.click(&format!("{row} form button"));
    b.wait_text(&format!("{row} .badge"), "idle", WAIT);
    assert_eq!(
        server.api_get(&format!("/workers/{worker}"))["drain"],
        false
    );

    // The runs list, filtered.
    b.goto("/runs?pool=web&type=task");
    b.wait_text("main", &run, WAIT);
    b.screenshot("runs");

    // A token: created and shown once, works, revoked, stops working.
    b.goto("/tokens");
    b.fill("#token-name", "ci-script");
    b.click("form[action='/tokens'] button");
    let token = b.wait_text("[data-token=api]", "gantry_api_", WAIT);
    let api = |token: &str| {
        server
            .http()
            .get(format!("{}/api/v1/pools", server.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(api(&token), 200);
    b.screenshot("tokens");
    let id = server
        .api_get("/tokens")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-script")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto("/tokens");
    assert!(!b.exists("[data-token=api]"), "the value is shown once");
    b.click(&format!("tr[data-token-id='{id}'] button"));
    wait_for("the revoked token to leave the list", WAIT, || {
        (!b.exists(&format!("tr[data-token-id='{id}']"))).then_some(())
    });
    assert_eq!(api(&token), 401);

    // Logout: back to the login form, and no page without signing in again.
    b.click("form.logout button");
    wait_for("the login form", WAIT, || {
        b.exists("input#token").then_some(())
    });
    b.goto("/runs");
    assert_eq!(b.path(), "/");
    assert!(b.exists("input#token"));
    assert!(!b.text("body").unwrap().contains(&run));
}

#[test]
#[ignore = "slow: Chromium"]
fn the_run_page_follows_a_growing_log_and_stops_by_keyboard() {
    if !browser::available() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("live");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let script = "i=0; while [ $i -lt 600 ]; do i=$((i+1)); \
                  printf '\\033[1;32mline %s\\033[0m <tag> & done\\n' $i; sleep 0.1; done";
    let run = server.submit("live", &["sh", "-c", script]);
    wait_for("the first lines", WAIT, || {
        String::from_utf8_lossy(&server.logs(&run))
            .contains("line 3")
            .then_some(())
    });
    // The only worker is busy: a second run says so.
    let second = server.submit("live", &["true"]);

    let b = signed_in(&server);
    b.goto(&format!("/runs/{second}"));
    b.wait_text("[data-why]", "workers of pool live are busy", WAIT);

    b.goto(&format!("/runs/{run}"));
    b.js("window.gantryTestMarker = 42; return null;");
    let first = b.text("#log").unwrap();
    let seen = first.matches("line ").count();
    // The log grows while the page is open, without a reload.
    let grown = b.wait_text("#log", &format!("line {}", seen + 20), WAIT);
    assert!(grown.len() > first.len());
    assert_eq!(b.js("return window.gantryTestMarker;"), 42, "no reload");
    assert!(b.exists("#log span.f2.bold"), "ANSI colours as classes");
    assert!(
        grown.contains("<tag> & done"),
        "log text escaped, shown as text"
    );
    b.screenshot("run");

    // Keyboard only: the skip link first, then into the page to Stop.
    b.goto(&format!("/runs/{run}"));
    b.js("window.gantryTestMarker = 43; return null;");
    b.keys(&TAB.to_string());
    assert!(b.focused().contains("Skip to content"), "{}", b.focused());
    b.keys(&ENTER.to_string());
    let mut order = Vec::new();
    for _ in 0..15 {
        b.keys(&TAB.to_string());
        let focused = b.focused();
        order.push(focused.clone());
        if focused.starts_with("button") && focused.contains("Stop") {
            break;
        }
    }
    assert!(
        order.last().is_some_and(|f| f.contains("Stop")),
        "Stop is reachable by Tab after the skip link: {order:?}"
    );
    assert!(
        !order.iter().any(|f| f.contains("Overview")),
        "the skip link skips the navigation: {order:?}"
    );
    b.keys(&ENTER.to_string());
    b.wait_text("[data-state]", "STOPPED", WAIT);
    assert_eq!(
        b.js("return window.gantryTestMarker;"),
        43,
        "followed live, no reload"
    );
    assert_eq!(server.run(&run)["state"], "STOPPED");
    // The log pane is in the tab order too, after the state section.
    for _ in 0..20 {
        if b.focused().starts_with("pre#log") {
            break;
        }
        b.keys(&TAB.to_string());
    }
    assert!(b.focused().starts_with("pre#log"), "{}", b.focused());

    // 375 px wide: nothing wider than the screen.
    b.set_size(375, 800);
    b.goto(&format!("/runs/{run}"));
    let overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth;");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than 375 px by {overflow}"
    );
    b.screenshot("run-narrow");
    b.goto("/");
    let overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth;");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "overview wider than 375 px by {overflow}"
    );
}

#[test]
#[ignore = "slow: Chromium and Terraform"]
fn confirm_and_discard_from_the_run_page_then_stack_state_and_diff() {
    if !browser::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = tf::tools(dir.path()) else {
        return;
    };
    let server = Server::start_with("10s");
    let pool = server.create_pool("tf");
    let _launcher = tf::start_launcher(&pool, &env);
    tf::create_stack(&server, "web", "tf", &tf::module(dir.path()), &[]);
    let first = tf::trigger(&server, "web", "tracked");
    let queued = tf::trigger(&server, "web", "tracked");
    server.wait_state(&first, "UNCONFIRMED", tf::LONG);

    let b = signed_in(&server);
    b.goto(&format!("/runs/{queued}"));
    b.wait_text(
        "[data-why]",
        "waiting for an earlier run on stack web",
        WAIT,
    );

    b.goto(&format!("/runs/{first}"));
    b.wait_text("[data-plan]", "1 to add, 0 to change, 0 to destroy", WAIT);
    assert!(b.text("ul.changes").unwrap().contains("null_resource.r"));
    b.screenshot("run-plan");
    b.js("window.gantryTestMarker = 1; return null;");
    b.click("form[action$='/confirm'] button");
    b.wait_text("[data-state]", "FINISHED", tf::LONG);
    assert_eq!(b.js("return window.gantryTestMarker;"), 1, "followed live");
    let outputs = b.text("main").unwrap();
    assert!(outputs.contains("(sensitive)") && !outputs.contains("sensitive-output-value"));
    tf::ended(&server, &queued, "FINISHED"); // no changes left to apply

    // A change, discarded from the page.
    server.cli_json(&["stack", "update", "web", "--env", "TF_VAR_trigger=b"]);
    let second = tf::trigger(&server, "web", "tracked");
    server.wait_state(&second, "UNCONFIRMED", tf::LONG);
    b.goto(&format!("/runs/{second}"));
    b.wait_text("[data-plan]", "1 to add, 0 to change, 1 to destroy", WAIT);
    b.click("form[action$='/discard'] button");
    b.wait_text("[data-state]", "DISCARDED", WAIT);
    assert_eq!(server.run(&second)["state"], "DISCARDED");

    // From the stack page: plan and apply again, giving a second state version.
    b.goto("/stacks/web");
    b.click("form[action='/stacks/web/runs'] button.primary");
    b.wait_text("h1", "Run", WAIT);
    b.wait_text("[data-state]", "UNCONFIRMED", tf::LONG);
    b.click("form[action$='/confirm'] button");
    b.wait_text("[data-state]", "FINISHED", tf::LONG);
    b.goto("/stacks/web");
    b.wait_text("main", "State versions", WAIT);
    assert_eq!(tf::versions(&server, "web").len(), 2);
    assert!(b.exists("a[href='/stacks/web/state/2'][download]"));
    b.screenshot("stack");
    b.click("form[action='/stacks/web/diff'] button");
    let diff = b.wait_text("pre.diff", "\"serial\"", WAIT);
    assert!(
        b.exists("pre.diff span.add") && b.exists("pre.diff span.del"),
        "{diff}"
    );
    b.screenshot("state-diff");
    b.goto("/stacks");
    b.screenshot("stacks");
}

#[test]
#[ignore = "slow: Chromium"]
fn read_only_pages_and_forms_work_without_javascript() {
    if !browser::available() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("plain");
    let launcher = Launcher::start(&pool, &[]);
    launcher.wait_registered();
    let run = server.submit(
        "plain",
        &["sh", "-c", "echo \"$((6 * 7)) without a script\""],
    );
    server.wait_run_end(&run, WAIT);

    let b = Browser::start_with(&server.url, 1280, 900, false);
    b.goto("/");
    b.fill("#token", ADMIN_TOKEN);
    b.click("main button[type=submit]");
    b.wait_text("h1", "Overview", WAIT);
    let script = "return document.documentElement.getAttribute('data-ui-script');";
    assert_eq!(b.js(script), serde_json::Value::Null, "ui.js is off");
    assert_eq!(count(&b, "plain", "total"), "1");
    b.goto(&format!("/runs/{run}"));
    b.wait_text("#log", "42 without a script", WAIT);
    assert!(b.text("[data-state]").unwrap().contains("FINISHED"));
    b.goto("/runs?pool=plain");
    assert!(b.text("main").unwrap().contains(&run));
    // A form posts and comes back, scripts or not.
    b.goto("/pools/plain");
    b.click("tr[data-worker] form button");
    b.wait_text("tr[data-worker] .badge", "drained", WAIT);
    b.goto("/stacks");
    b.wait_text("h1", "Stacks", WAIT);
    b.goto("/tokens");
    b.wait_text("h1", "API tokens", WAIT);
}
