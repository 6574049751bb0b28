//! The web console: static files under `host/console/`, compiled into the
//! binary (debug builds too: `debug-embed`), served at `/`. A file added
//! there is picked up by the next build once this file is touched.
//!
//! The console is a client of the admin API like any other: it sends the
//! token the user typed as `Authorization: Bearer`, and the server decides
//! what it may do. Its files are public; nothing in them is secret. They are
//! served with a strict Content-Security-Policy (scripts and styles from
//! this origin only, no inline code, no framing) and an ETag, so a reload
//! costs a 304.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "console/"]
struct Files;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/`: the console's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `/console/{file}`: its scripts, styles and icons.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Files::get(name) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    let etag = format!("\"{}\"", crate::plugin::hex(&file.metadata.sha256_hash()[..16]));
    let security = [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, security, [(header::ETAG, etag_value)]).into_response();
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("text/plain"));
    (security, [(header::CONTENT_TYPE, mime), (header::ETAG, etag_value)], file.data.into_owned()).into_response()
}
