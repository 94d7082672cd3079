//! Sealed-message format v1 (placeholder, being written).
