//! Web UI sessions: a stateless signed cookie, so that any replica sharing
//! the database and the secrets keyring accepts it.
//!
//! The cookie carries the API token's ID, an expiry and a random nonce,
//! MACed with HMAC-SHA256 under a key derived from the secrets keyring
//! (`derive_keys`: the current key signs, every key of the ring verifies).
//! Every request checks the token against the store, so revoking the token
//! ends its sessions at once. Logout clears the cookie in the browser; a
//! copy taken before then stays valid until it expires or the token is
//! revoked (docs/ui.md says so).
//!
//! CSRF: every form that changes something carries HMAC(nonce) of its
//! session, checked by [`Action`] before the handler runs; with
//! `SameSite=Strict` on top, another site can neither read nor use it.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;

use crate::auth::hash_secret;
use crate::state::{now_ms, AppState};

/// The cookie's name.
pub const COOKIE: &str = "gantry_session";
/// How long a session lives (no sliding renewal: it ends at this age).
pub const SESSION_TTL_MS: i64 = 8 * 60 * 60 * 1000;
/// The HKDF purpose of the MAC key; a new version ends every session.
const KEY_PURPOSE: &str = "gantry web ui session v1";

type HmacSha256 = Hmac<Sha256>;

/// The MAC keys, current first.
pub struct SessionKeys(Vec<[u8; 32]>);

impl SessionKeys {
    pub fn from_keyring(keyring: &gantry_pki::at_rest::SecretsKeyring) -> SessionKeys {
        SessionKeys(keyring.derive_keys(KEY_PURPOSE))
    }

    /// A random key: sessions of this process only (tests, tools).
    pub fn random() -> SessionKeys {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SessionKeys(vec![key])
    }

    fn mac(key: &[u8; 32], message: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(message.as_bytes());
        mac
    }
}

fn signed_message(token_id: &str, expires: i64, nonce: &str) -> String {
    format!("gantry-ui-session-v1\n{token_id}\n{expires}\n{nonce}")
}

/// A verified session.
#[derive(Clone)]
pub struct UiSession {
    pub token_id: String,
    pub token_name: String,
    nonce: String,
    /// Which key of the ring verified it: it also makes its CSRF token.
    key_index: usize,
}

impl UiSession {
    /// The CSRF token of this session's forms.
    pub fn csrf(&self, state: &AppState) -> String {
        let key = &state.ui_keys.0[self.key_index];
        let mac = SessionKeys::mac(key, &format!("gantry-ui-csrf-v1\n{}", self.nonce));
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn csrf_matches(&self, state: &AppState, given: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(given.trim()) else {
            return false;
        };
        let key = &state.ui_keys.0[self.key_index];
        SessionKeys::mac(key, &format!("gantry-ui-csrf-v1\n{}", self.nonce))
            .verify_slice(&given)
            .is_ok()
    }
}

/// A new session's cookie value.
fn issue(state: &AppState, token_id: &str, now: i64) -> String {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let expires = now + SESSION_TTL_MS;
    let mac = SessionKeys::mac(
        &state.ui_keys.0[0],
        &signed_message(token_id, expires, &nonce),
    );
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("v1.{token_id}.{expires}.{nonce}.{tag}")
}

/// Checks the MAC and the expiry; the token itself is checked by the caller.
fn verify(state: &AppState, value: &str, now: i64) -> Option<(String, i64, String, usize)> {
    let mut parts = value.split('.');
    let (Some("v1"), Some(token_id), Some(expires), Some(nonce), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let expires: i64 = expires.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let message = signed_message(token_id, expires, nonce);
    let key_index = state
        .ui_keys
        .0
        .iter()
        .position(|key| SessionKeys::mac(key, &message).verify_slice(&tag).is_ok())?;
    (expires > now).then(|| (token_id.to_string(), expires, nonce.to_string(), key_index))
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// The session of a request, if it has a valid one whose token is still live.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Option<UiSession> {
    let value = cookie_value(headers)?;
    let (token_id, _expires, nonce, key_index) = verify(state, &value, now_ms())?;
    // Revoking the token ends its sessions: checked on every request.
    let tokens = state.store.list_api_tokens().await.ok()?;
    let token = tokens
        .into_iter()
        .find(|t| t.id == token_id && t.revoked_at.is_none())?;
    Some(UiSession {
        token_id,
        token_name: token.name,
        nonce,
        key_index,
    })
}

/// Whether the session cookie should be `Secure`: served over HTTPS here,
/// or behind a proxy that terminates it (`--public-url https://…`).
fn secure(state: &AppState) -> bool {
    state.config.tls.is_some()
        || state
            .config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

fn set_cookie(state: &AppState, value: &str, max_age_s: i64) -> HeaderValue {
    let mut cookie = cookie::Cookie::build((COOKIE, value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_s));
    if secure(state) {
        cookie = cookie.secure(true);
    }
    HeaderValue::from_str(&cookie.build().to_string()).expect("a cookie is a valid header")
}

/// Refused without a session: pages send the browser to the login form;
/// event streams and actions get a bare 401. Never any data.
pub struct NoSession {
    page: bool,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        if self.page {
            return Redirect::to("/").into_response();
        }
        super::layout::error_page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "Your session ended or was never started: sign in again.",
        )
    }
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<UiSession, NoSession> {
        match current(state, &parts.headers).await {
            Some(session) => Ok(session),
            None => Err(NoSession {
                page: parts.method == Method::GET && !parts.uri.path().ends_with("/events"),
            }),
        }
    }
}

/// A form post that changes something: a session, a matching CSRF token
/// (else 403, before anything is parsed or done), then the form.
pub struct Action<T> {
    pub session: UiSession,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Action<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Action<T>, Response> {
        let (mut parts, body) = request.into_parts();
        let session = UiSession::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, 256 * 1024).await.map_err(|_| {
            super::layout::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form is larger than 256 KiB.",
            )
        })?;
        let csrf = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !csrf.is_some_and(|c| session.csrf_matches(state, &c)) {
            tracing::warn!(path = %parts.uri.path(), "web UI form refused: missing or wrong CSRF token");
            return Err(super::layout::error_page(
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form's CSRF token is missing or does not belong to your session. Reload the page and try again.",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            super::layout::error_page(
                StatusCode::BAD_REQUEST,
                "Form not valid",
                &format!("The form could not be read: {e}."),
            )
        })?;
        Ok(Action { session, form })
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: an API token in, a session cookie out.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    let record = if token.is_empty() {
        None
    } else {
        match state.store.find_api_token(&hash_secret(token)).await {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, "web UI login: store error");
                None
            }
        }
    };
    let Some(record) = record else {
        tracing::warn!("web UI login refused: unknown or revoked API token");
        let page = super::layout::login_page(Some(
            "That API token is not valid (unknown or revoked). Paste a token made by `gantry token create` or the admin token.",
        ));
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(page.into_string()),
        )
            .into_response();
    };
    tracing::info!(token_id = %record.id, "web UI session started");
    let value = issue(&state, &record.id, now_ms());
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, &value, SESSION_TTL_MS / 1000),
    );
    response
}

/// `POST /logout`: clears the cookie.
pub async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    action: Action<serde::de::IgnoredAny>,
) -> Response {
    tracing::info!(token_id = %action.session.token_id, "web UI session ended (logout)");
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cookie_verifies_until_it_expires_and_not_once_altered() {
        let state = crate::ui::tests::memory_state().await;
        let value = issue(&state, "TOKEN1", 1_000);
        assert!(verify(&state, &value, 2_000).is_some());
        assert!(verify(&state, &value, 1_000 + SESSION_TTL_MS).is_none());
        let altered = value.replace("TOKEN1", "TOKEN2");
        assert!(verify(&state, &altered, 2_000).is_none());
        let later = value.replacen(
            &(1_000 + SESSION_TTL_MS).to_string(),
            &(9_000 + SESSION_TTL_MS).to_string(),
            1,
        );
        assert!(verify(&state, &later, 2_000).is_none());
        // Another server's key (another keyring) does not accept it.
        let other = crate::ui::tests::memory_state().await;
        assert!(verify(&other, &value, 2_000).is_none());
    }
}
