//! Who is calling, and what their credentials let them do.
//!
//! - [`bearer`]: who a bearer credential stands for, and the caller of an action.

pub mod bearer;

pub use bearer::{Who, authenticate, caller};
