//! The one error body every Castyard HTTP endpoint answers with: the API's and the workers'.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: bad_request, unauthorized, not_found, validation_failed, ...
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.to_string(),
            },
        }
    }
}
