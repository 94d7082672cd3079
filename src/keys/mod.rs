//! Keyring (placeholder, being written).
