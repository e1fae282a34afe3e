//! Writ's identity: who authorized an action (a user, through a [`Grant`]), who decided it (an
//! agent), and the delegated tokens that carry both (OAuth 2.0 Token Exchange, RFC 8693).
//!
//! This crate is pure logic over keys, clocks and rows handed to it: grant checks that say in
//! plain words which constraint failed, token minting and verification, API-key hashing,
//! Argon2id password hashing. It does no database work (`writ-store` persists users, agents,
//! grants, budgets and password hashes) and no network I/O (an OIDC issuer's JWKS is fetched by
//! the caller and handed in).

pub mod amount;
pub mod apikey;
pub mod assertion;
pub mod constraint;
pub mod exchange;
pub mod grant;
mod ids;
mod jws;
pub mod oidc;
pub mod password;
pub mod token;

pub use amount::Amount;
pub use constraint::{Constraint, Rule};
pub use grant::{ActionAttempt, Grant, GrantDenial, GrantSpec, Principal, SumBudget, Usage};
pub use ids::{AgentId, GrantId, UserId};
pub use jws::{MAX_TOKEN_LEN, ed25519_thumbprint};
pub use token::{CachingVerifier, DelegatedClaims, TokenError, TokenIssuer, TokenVerifier};

/// What went wrong. Messages name the input and never contain a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
}
