//! The facade's one error type.

use std::error::Error as StdError;
use std::fmt;

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, for code that reacts to it. More kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was refused (a bad `defaultConsent`, consent payload, TC string or purpose name);
    /// nothing was sent and nothing changed.
    InvalidInput,
    /// Consent does not allow it: the person (or the default) said no. Refused at the gate, nothing
    /// of the event was written or sent; for a `send_event` whose event was queued when consent
    /// became "out", the event was deleted from disk (an attempt made before the withdrawal may
    /// have reached the server).
    ConsentDeclined,
    /// The client is shut down, or shut down while this was waiting. Queued events stay on disk.
    Shutdown,
    /// The data directory is in use by another client, in this process or another.
    Locked,
    /// A file in the data directory could not be read or written, or the consent record chain
    /// does not verify.
    Storage,
    /// The server did not confirm a `setConsent` (unreachable once the retries ran out, a refusal,
    /// or an answer that cannot be read). Until a call is confirmed, the stricter of the old and
    /// the new consent applies: a failed opt-out still deletes the queued events it withdraws.
    Transport,
    /// The server refused the event for good: a 4xx other than 408 and 429 (a 400, 413 or 422 only
    /// once the event is alone in its request: larger requests are split first), or an answer
    /// that cannot be read. The event is not delivered and not retried.
    Rejected,
    /// The queue holds as many events as it may; the event was not written.
    QueueFull,
    /// [`flush`](crate::Client::flush) did not finish within its deadline.
    Timeout,
    /// The builder's configuration is incomplete or invalid.
    Config,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::ConsentDeclined => "consent declined",
            ErrorKind::Shutdown => "shut down",
            ErrorKind::Locked => "data directory in use",
            ErrorKind::Storage => "storage",
            ErrorKind::Transport => "transport",
            ErrorKind::Rejected => "rejected by the server",
            ErrorKind::QueueFull => "queue full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Config => "configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the consent client: a [`kind`](Self::kind), a message, and the cause from the
/// layer below when there is one ([`source`](StdError::source)).
///
/// ```
/// # async fn run() -> Result<(), consent::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let error = consent::Client::builder()
///     .org_id("ORG@AdobeOrg")
///     .default_consent("IN")
///     .data_dir(dir.path())
///     .build()
///     .await
///     .unwrap_err();
/// assert!(error.is_invalid_input());
/// assert_eq!(error.to_string(),
///     r#"'defaultConsent': Expected one of these values: ["in","out","pending"], but got "IN"."#);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An error whose message is the cause's own message (the cause stays its source).
    pub(crate) fn from_cause(
        kind: ErrorKind,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self::with_source(kind, cause.to_string(), cause)
    }

    pub(crate) fn shutdown() -> Self {
        Self::new(ErrorKind::Shutdown, "the consent client is shut down")
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether consent does not allow it ([`ErrorKind::ConsentDeclined`]).
    pub fn is_consent_declined(&self) -> bool {
        self.kind == ErrorKind::ConsentDeclined
    }

    /// Whether the client is shut down ([`ErrorKind::Shutdown`]).
    pub fn is_shutdown(&self) -> bool {
        self.kind == ErrorKind::Shutdown
    }

    /// Whether the input was refused ([`ErrorKind::InvalidInput`]).
    pub fn is_invalid_input(&self) -> bool {
        self.kind == ErrorKind::InvalidInput
    }

    /// Whether a deadline passed ([`ErrorKind::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// Whether the data directory is in use by another client ([`ErrorKind::Locked`]).
    pub fn is_locked(&self) -> bool {
        self.kind == ErrorKind::Locked
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}
