//! writ-audit (being built).
