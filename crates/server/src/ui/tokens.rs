//! API tokens: the list, create (the value shown once), revoke.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, action_button, ago, csrf_field, shell, Nav};
use super::session::{Action, UiSession};
use crate::state::{now_ms, AppState};

pub async fn page_of(state: &AppState, session: &UiSession, created: Option<Markup>) -> Response {
    let tokens = match state.store.list_api_tokens().await {
        Ok(tokens) => tokens,
        Err(error) => return layout::api_error(error.into()),
    };
    let now = now_ms();
    let body = html! {
        h1 { "API tokens" }
        @if let Some(created) = created { (created) }
        section aria-labelledby="create-h" {
            h2 id="create-h" { "Create a token" }
            form.filters method="post" action="/tokens" {
                (csrf_field(state, session))
                label for="token-name" { "Name (what will use it)" input id="token-name" name="name" required maxlength="100"; }
                button type="submit" { "Create" }
            }
        }
        section aria-labelledby="list-h" {
            h2 id="list-h" { "Tokens" }
            div.scroll { table.stack-on-narrow {
                thead { tr { th scope="col" { "Name" } th scope="col" { "ID" } th scope="col" { "Created" }
                             th scope="col" { "Status" } th scope="col" { "Action" } } }
                tbody { @for token in &tokens {
                    tr data-token-id=(token.id) {
                        td data-label="Name" { (token.name) @if token.id == session.token_id { " " span.muted { "(this session)" } } }
                        td data-label="ID" { code { (token.id) } }
                        td data-label="Created" { (ago(token.created_at, now)) }
                        td data-label="Status" { @match token.revoked_at { Some(at) => { "revoked " (ago(at, now)) }, None => "active" } }
                        td data-label="Action" { @if token.revoked_at.is_none() {
                            (action_button(state, session, &format!("/tokens/{}/revoke", token.id), "Revoke", "danger", false))
                        } }
                    }
                } }
            } }
        }
    };
    shell(state, Some(session), "API tokens", Nav::Tokens, body)
}

pub async fn page(State(state): State<AppState>, session: UiSession) -> Response {
    page_of(&state, &session, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(State(state): State<AppState>, action: Action<CreateForm>) -> Response {
    match crate::api::create(&state, &action.form.name).await {
        Ok((secret, record)) => {
            let created = html! {
                div.notice role="alert" {
                    p { "Token " strong { (record.name) } " created. This is its value; it is shown once, store it now:" }
                    code.secret data-token="api" { (secret) }
                }
            };
            page_of(&state, &action.session, Some(created)).await
        }
        Err(error) => layout::api_error(error),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    match crate::api::revoke(&state, &id).await {
        Ok(()) => Redirect::to("/tokens").into_response(),
        Err(error) => layout::api_error(error),
    }
}
