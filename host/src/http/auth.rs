//! Who is calling: the bearer token, and what its scopes allow.
//!
//! A token is `corral_<random>`; the state keeps only its SHA-256, under an
//! id made of the hash's first 12 hex digits. Identity comes from the
//! `Authorization` header alone: never from forwardable headers such as
//! `X-Forwarded-For` (ZooKeeper's CVE-2024-51504).

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};

use super::Api;
use super::error::ApiError;
use crate::machine::command::{Identity, Scope};
use crate::proto::data::Id;
use crate::tree::{self, Token};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token: Token,
}

impl Principal {
    /// Refuses with 403 unless a scope of the token grants `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.token.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("token {} lacks the {needed:?} scope", self.token.id),
            )
            .with_details(serde_json::json!({ "needed": needed, "scopes": self.token.scopes })))
        }
    }

    /// The identity written into this caller's log entries: `token:<id>`,
    /// and the superuser for an admin token.
    pub fn identity(&self) -> Identity {
        let mut ids = vec![Id::new("token", &self.token.id)];
        if self.token.allows(Scope::Admin) {
            ids.push(Id::new("super", ""));
        }
        Identity { ids, token: Some(self.token.id.clone()) }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

impl FromRequestParts<Api> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get("authorization")
            .ok_or_else(|| unauthenticated("send Authorization: Bearer <token>"))?
            .to_str()
            .map_err(|_| unauthenticated("the Authorization header is not text"))?;
        let secret = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <token>`"))?
            .trim();
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let id = Token::id_of(&hash);
        let token = api.read(move |view| tree::get_token(&view.tokens()?, &id)).await?;
        match token {
            Some(t) if t.hash == hash => Ok(Principal { token: t }),
            _ => Err(unauthenticated("unknown or revoked token")),
        }
    }
}
