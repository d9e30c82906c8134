//! The consent engine (work in progress).
