//! The UI's static files, compiled into the binary. Their paths carry the
//! version, so a browser may cache them for long and still get a new
//! release's at once.

use axum::http::header;
use axum::response::IntoResponse;

pub const JS_PATH: &str = concat!("/ui/assets/", env!("CARGO_PKG_VERSION"), "/ui.js");
pub const CSS_PATH: &str = concat!("/ui/assets/", env!("CARGO_PKG_VERSION"), "/ui.css");

const JS: &str = include_str!("assets/ui.js");
const CSS: &str = include_str!("assets/ui.css");
const CACHE: &str = "public, max-age=86400";

pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        JS,
    )
}

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        CSS,
    )
}
