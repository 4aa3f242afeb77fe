//! Helpers for the end-to-end tests (namespaces, daemon, CLI).
