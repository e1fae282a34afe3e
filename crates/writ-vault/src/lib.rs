//! writ-vault (being built).
