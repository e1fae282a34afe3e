//! Who is calling, and what their credentials let them do: the application logic over the
//! identity rows that `writ-store` keeps. The store only reads and writes rows (and spends a
//! budget or counts a failure in one atomic statement); the decisions are made here.
//!
//! - [`bearer`]: who a bearer credential stands for, and the caller of an action;
//! - [`exchange`]: the OAuth token endpoint (RFC 8693): a subject token to a user, an actor
//!   token to an enabled agent, the grant loaded, the delegated token minted;
//! - [`grants`]: the grant check as the pipeline runs it, with the atomic spend of its budget;
//! - [`passwords`]: console passwords: setting one and signing in with one, the lockout
//!   decisions, and the Argon2id work on a bounded number of blocking threads.

pub mod bearer;
pub mod exchange;
pub mod grants;
pub mod passwords;

pub use bearer::{Who, authenticate, caller};
pub use exchange::{authenticate_agent, authenticate_user, exchange_token};
pub use grants::use_grant;
