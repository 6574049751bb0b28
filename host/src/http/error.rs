//! One error shape for every route: an HTTP status and a JSON body
//! `{code, message, details}`, where `code` is stable and machine-readable.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::proto::error::ErrorCode;
use crate::tree::StoreError;

/// The body of every error reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: `no_node`, `bad_version`, `unauthenticated`, ...
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: serde_json::Value::Null }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A ZooKeeper error code from the state machine, about `path`.
    pub fn zk(code: ErrorCode, path: &str) -> ApiError {
        let (status, name) = match code {
            ErrorCode::NoNode => (StatusCode::NOT_FOUND, "no_node"),
            ErrorCode::NodeExists => (StatusCode::CONFLICT, "node_exists"),
            ErrorCode::BadVersion => (StatusCode::CONFLICT, "bad_version"),
            ErrorCode::NotEmpty => (StatusCode::CONFLICT, "not_empty"),
            ErrorCode::NoAuth => (StatusCode::FORBIDDEN, "no_auth"),
            ErrorCode::BadArguments => (StatusCode::BAD_REQUEST, "bad_arguments"),
            ErrorCode::InvalidAcl => (StatusCode::BAD_REQUEST, "invalid_acl"),
            ErrorCode::NoChildrenForEphemerals => (StatusCode::BAD_REQUEST, "no_children_for_ephemerals"),
            ErrorCode::SessionExpired => (StatusCode::GONE, "session_expired"),
            ErrorCode::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, name, format!("{path}: {code}"))
            .with_details(serde_json::json!({ "path": path, "zookeeper_code": code.code() }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("admin API storage error: {e}");
        ApiError::internal(format!("storage: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code.to_owned(), message: self.message, details: self.details };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", "Bearer".parse().expect("valid header"));
        }
        resp
    }
}
