//! writ-core (being built).
