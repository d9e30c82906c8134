//! The head of a hash chain and the anchor that keeps it: what the record log (`records.rs`)
//! and the state file holding its anchor (`state.rs`) share, in a module of its own so that
//! neither imports the other's internals in a circle.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fsutil::FsError;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last record of a verified chain: its sequence number and hash.
///
/// The log keeps its own head in the state file next to it (its *anchor*, see [`RecordLog`](crate::RecordLog)). A
/// copy kept off the device, such as a receipt the server signed for it, is checked with
/// [`RecordLog::verify_against`](crate::RecordLog::verify_against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of records (the last `seq`).
    pub count: u64,
    /// The last record's hash ([`GENESIS_HASH`] when empty).
    pub hash: String,
}

/// Why the record log's anchor could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The state file could not be read or written.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The state file holding the anchor does not decode; it is left as it is.
    #[error("state file {} holding the record log's anchor is corrupt: {reason}", path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}
