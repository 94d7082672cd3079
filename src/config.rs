//! TOML configuration (placeholder, being written).
