//! writ-store (being built).
