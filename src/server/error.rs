//! The one error type of the HTTP surface, answered as OAuth-style JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::aws::AwsError;
use crate::tokens::TokenError;

/// An error answered to a client: `{"error","error_description"}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OAuth error code, e.g. `invalid_token`.
    pub error: &'static str,
    /// The cause, plainly. Never a token or secret.
    pub description: String,
    /// Seconds for a `Retry-After` header (a 503 while STS calls are paced).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 with `error`.
    pub fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 401 with `error`.
    pub fn unauthorized(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 403 `access_denied`.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error: "access_denied",
            description: description.into(),
            retry_after: None,
        }
    }

    /// 404 `not_found`.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            description: description.into(),
            retry_after: None,
        }
    }

    /// 503 `temporarily_unavailable`.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: description.into(),
            retry_after: None,
        }
    }

    /// 500 `server_error`.
    pub fn internal(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: description.into(),
            retry_after: None,
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Jwks { .. } | TokenError::ReviewUnavailable(_) => {
                Self::unavailable(e.to_string())
            }
            TokenError::Missing => Self::unauthorized("invalid_request", e.to_string()),
            _ => Self::unauthorized("invalid_token", e.to_string()),
        }
    }
}

impl From<AwsError> for ApiError {
    fn from(e: AwsError) -> Self {
        match &e {
            AwsError::Service { .. } => {
                Self::forbidden(format!("sts:AssumeRoleWithSAML was refused: {e}"))
            }
            AwsError::Throttled(_) => Self::unavailable(format!("STS is throttling: {e}")),
            AwsError::Paced { retry_after, .. } => Self {
                retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::unavailable(format!("STS is throttling: {e}"))
            },
            AwsError::Transport(_) => Self {
                status: StatusCode::BAD_GATEWAY,
                error: "server_error",
                description: format!("STS could not be reached: {e}"),
                retry_after: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
