//! The page shell and the small pieces every page uses. Everything goes
//! through maud, which escapes every value it interpolates.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use gantry_wire::pool::WorkerState;
use gantry_wire::run::RunState;
use maud::{html, Markup, DOCTYPE};

use super::session::UiSession;
use crate::state::AppState;

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Runs,
    Stacks,
    Tokens,
}

/// A whole page: skip link, header with navigation and logout, `main`.
pub fn shell(
    state: &AppState,
    session: Option<&UiSession>,
    title: &str,
    nav: Nav,
    body: Markup,
) -> Response {
    let item = |target: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } }
        }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Gantry" }
                    link rel="stylesheet" href=(super::assets::CSS_PATH);
                    script src=(super::assets::JS_PATH) defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/" { "Gantry" }
                        @if let Some(session) = session {
                            nav aria-label="Main" {
                                ul {
                                    (item(Nav::Overview, "/", "Overview"))
                                    (item(Nav::Runs, "/runs", "Runs"))
                                    (item(Nav::Stacks, "/stacks", "Stacks"))
                                    (item(Nav::Tokens, "/tokens", "Tokens"))
                                }
                            }
                            form.logout method="post" action="/logout" {
                                (csrf_field(state, session))
                                span.who { "Signed in with token " strong { (session.token_name) } }
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                    main id="main" tabindex="-1" { (body) }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// The hidden CSRF field every changing form carries.
pub fn csrf_field(state: &AppState, session: &UiSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf(state)); }
}

/// A one-button form that posts to `action` (drain, stop, confirm…). A
/// `live` form is sent by ui.js without leaving the page, which then
/// follows the result over its event stream.
pub fn action_button(
    state: &AppState,
    session: &UiSession,
    action: &str,
    label: &str,
    class: &str,
    live: bool,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-live=[live.then_some("")] {
            (csrf_field(state, session))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// `/` without a session.
pub fn login_page(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Gantry" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
            }
            body {
                main id="main" .login {
                    h1 { "Gantry" }
                    form method="post" action="/login" {
                        @if let Some(error) = error {
                            p.error role="alert" { (error) }
                        }
                        label for="token" { "API token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                        p.hint { "The admin token, or one made with " code { "gantry token create" } "." }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gantry" }
                link rel="stylesheet" href=(super::assets::CSS_PATH);
            }
            body {
                main id="main" {
                    h1 { (title) }
                    p role="alert" { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    };
    (status, Html(body.into_string())).into_response()
}

/// An API error (the shared action functions return these) as a page.
pub fn api_error(error: crate::error::ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::BAD_REQUEST => "Not valid",
        _ => "Something went wrong",
    };
    error_page(status, title, &error.message)
}

pub fn run_state(state: RunState) -> Markup {
    let class = match state {
        RunState::Finished => "ok",
        RunState::Failed | RunState::Lost => "bad",
        RunState::Unconfirmed => "attention",
        RunState::Stopped | RunState::Discarded | RunState::Canceled => "ended",
        RunState::Queued | RunState::Ready | RunState::Confirmed => "waiting",
        _ => "active",
    };
    html! { span class={ "badge " (class) } { (state.as_str()) } }
}

pub fn worker_state(state: WorkerState) -> Markup {
    let (label, class) = match state {
        WorkerState::Idle => ("idle", "ok"),
        WorkerState::Busy => ("busy", "active"),
        WorkerState::Drained => ("drained", "attention"),
        WorkerState::Lost => ("lost", "bad"),
        WorkerState::Gone => ("gone", "ended"),
    };
    html! { span class={ "badge " (class) } { (label) } }
}

/// "3 min ago", with the exact time for screen readers and tooltips.
pub fn ago(at_ms: i64, now_ms: i64) -> Markup {
    let seconds = ((now_ms - at_ms) / 1000).max(0);
    let text = match seconds {
        0..=4 => "just now".to_string(),
        5..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    };
    let exact = crate::convert::timestamp(at_ms);
    html! { time datetime=(exact) title=(exact) { (text) } }
}

/// A run's ID, shortened for tables (ULIDs share their time prefix).
pub fn run_link(id: &str) -> Markup {
    html! { a href={ "/runs/" (id) } { code { (id) } } }
}
