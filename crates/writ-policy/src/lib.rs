//! writ-policy (being built).
