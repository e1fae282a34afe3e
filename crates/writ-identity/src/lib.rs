//! writ-identity (being built).
