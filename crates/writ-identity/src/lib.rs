//! Writ's identity: who authorized an action (a user, through a [`Grant`]), who decided it (an
//! agent), and the delegated tokens that carry both (OAuth 2.0 Token Exchange, RFC 8693).
//!
//! This crate is pure logic over keys, clocks and rows handed to it: grant checks that say in
//! plain words which constraint failed, token minting and verification, API-key hashing,
//! Argon2id password hashing. It does no database work (`writ-store` persists users, agents,
//! grants, budgets and password hashes) and no network I/O (an OIDC issuer's JWKS is fetched by
//! the caller and handed in, unless the `fetch` feature is on).
//!
//! Modules:
//! - `ids`: the ids of users, agents and grants;
//! - `amount`: six-decimal fixed-point amounts, compared exactly;
//! - `constraint`: a grant's constraints on an action's arguments and their evaluation;
//! - `grant`: grants, who may issue them, and the grant check with its worded denials;
//! - `apikey`: API keys, generated and parsed, with the hash that is stored instead of them;
//! - `password` (feature `password`): Argon2id hashing into PHC strings, the password rules;
//! - `token` (feature `tokens`): delegated tokens (EdDSA JWT) minted and verified;
//! - `exchange` (feature `tokens`): the RFC 8693 token exchange's request, answer and decision;
//! - `assertion` (feature `tokens`): RFC 7523 client assertions of agents;
//! - `oidc` (feature `tokens`): ID tokens of external issuers against their JWKS;
//! - `jws` (feature `tokens`): the compact JWS parsing and signing they share;
//! - `base64url`: the unpadded base64url of keys and tokens.
//!
//! Features: `password` (Argon2id) and `tokens` (the token code and its signature crates:
//! Ed25519, ECDSA P-256, RSA) are on by default; a crate that only needs ids, grants and
//! constraints switches them off, as `writ-store` does. `fetch` adds HTTP fetching of JWKS.

pub mod amount;
pub mod apikey;
#[cfg(feature = "tokens")]
pub mod assertion;
mod base64url;
pub mod constraint;
#[cfg(feature = "tokens")]
pub mod exchange;
pub mod grant;
mod ids;
#[cfg(feature = "tokens")]
mod jws;
#[cfg(feature = "tokens")]
pub mod oidc;
#[cfg(feature = "password")]
pub mod password;
#[cfg(feature = "tokens")]
pub mod token;

pub use amount::Amount;
pub use constraint::{Constraint, Rule};
pub use grant::{ActionAttempt, Grant, GrantDenial, GrantSpec, Principal, SumBudget, Usage};
pub use ids::{AgentId, GrantId, UserId};
#[cfg(feature = "tokens")]
pub use jws::{MAX_TOKEN_LEN, ed25519_thumbprint};
#[cfg(feature = "tokens")]
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
