use axum::extract::State;
use axum::http::StatusCode;
use gantry_store::ApiTokenRecord;
use gantry_wire::pool::{ApiToken, ApiTokenCreated, CreateApiToken};

use crate::auth::{hash_secret, new_secret, User};
use crate::convert::timestamp;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::{now_ms, AppState};

fn token(record: &ApiTokenRecord) -> ApiToken {
    ApiToken {
        id: record.id.clone(),
        name: record.name.clone(),
        created_at: timestamp(record.created_at),
    }
}

/// Creates an API token. Its value is returned once; only its hash is kept.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateApiToken,
    responses((status = 201, body = ApiTokenCreated), (status = 400, body = gantry_wire::error::ErrorBody)))]
pub async fn create_token(
    _user: User,
    State(state): State<AppState>,
    Json(request): Json<CreateApiToken>,
) -> ApiResult<(StatusCode, Json<ApiTokenCreated>)> {
    let (secret, record) = create(&state, &request.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenCreated {
            token: secret,
            token_info: token(&record),
        }),
    ))
}

/// Creates a token (the API's and the web UI's): its secret, shown once, and its record.
pub(crate) async fn create(state: &AppState, name: &str) -> ApiResult<(String, ApiTokenRecord)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid(
            "name",
            "give the token a name of 1-100 characters, e.g. the script that will use it",
        ));
    }
    let secret = new_secret("gantry_api_");
    let record = state
        .store
        .insert_api_token(name, &hash_secret(&secret), now_ms())
        .await?;
    tracing::info!(token_id = %record.id, name, "API token created");
    Ok((secret, record))
}

#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, body = Vec<ApiToken>)))]
pub async fn list_tokens(
    _user: User,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(
        state
            .store
            .list_api_tokens()
            .await?
            .iter()
            .map(token)
            .collect(),
    ))
}

/// Revokes a token at once. The last active token cannot be revoked.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = gantry_wire::error::ErrorBody), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn revoke_token(
    _user: User,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    revoke(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a token (the API's and the web UI's); its UI sessions end with it.
pub(crate) async fn revoke(state: &AppState, id: &str) -> ApiResult<()> {
    state.store.revoke_api_token(id, now_ms()).await?;
    tracing::info!(token_id = %id, "API token revoked");
    Ok(())
}
