//! Bodies of path reservations.

use schemars::JsonSchema;
use serde::Deserialize;
use utoipa::ToSchema;

use super::fence;
use crate::domain::paths::{self, MAX_PATTERNS};
use crate::domain::InputError;

/// Body of `POST /tasks/{id}/reservations`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservePaths {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// Glob patterns relative to the repository's root (`src/auth/**`; at most 64).
    #[schemars(length(min = 1, max = MAX_PATTERNS))]
    pub paths: Vec<String>,
    /// Exclusive (the default: no other lease may reserve an overlapping path) or shared
    /// (other shared reservations may overlap it).
    pub exclusive: Option<bool>,
}

/// A checked reservation request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReserveSpec {
    /// The fence.
    pub fence: i64,
    /// The patterns, normalised.
    pub paths: Vec<String>,
    /// Exclusive or shared.
    pub exclusive: bool,
}

impl ReservePaths {
    /// Checks the request.
    pub fn parse(self) -> Result<ReserveSpec, InputError> {
        if self.paths.is_empty() {
            return Err(InputError::new("paths", "must name at least one pattern"));
        }
        Ok(ReserveSpec {
            fence: fence(self.fence)?,
            paths: paths::patterns("paths", &self.paths)?,
            exclusive: self.exclusive.unwrap_or(true),
        })
    }
}

/// Which reservation to release, under which lease: the `release_paths` tool's arguments, and
/// `DELETE /tasks/{id}/reservations/{reservation}?fence=F`.
#[derive(Debug, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePaths {
    /// The fence from the claim.
    #[schemars(range(min = 1))]
    pub fence: i64,
    /// The reservation's id, from reserve_paths.
    #[schemars(range(min = 1))]
    pub reservation: i64,
}

impl ReleasePaths {
    /// Checks the request: (reservation, fence).
    pub fn parse(self) -> Result<(i64, i64), InputError> {
        if self.reservation < 1 {
            return Err(InputError::new("reservation", "must be a reservation id"));
        }
        Ok((self.reservation, fence(self.fence)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_needs_a_fence_and_patterns() {
        let body = |fence, paths: &[&str]| ReservePaths {
            fence,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            exclusive: None,
        };
        let spec = body(3, &["./src/auth/", "docs/*.md"]).parse().unwrap();
        assert_eq!(spec.paths, ["src/auth", "docs/*.md"]);
        assert!(spec.exclusive);
        assert_eq!(body(0, &["a"]).parse().unwrap_err().field, "fence");
        assert_eq!(body(1, &[]).parse().unwrap_err().field, "paths");
        assert_eq!(body(1, &["a", "/etc"]).parse().unwrap_err().field, "paths[1]");
    }
}
