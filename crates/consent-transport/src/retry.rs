//! Retries: capped exponential backoff with full jitter, `Retry-After`, and injectable randomness
//! and sleeping.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::ids::random_u64;

/// How a request ended, for the caller's queue and for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// The server accepted it.
    Sent,
    /// It failed in a way that may pass later (network, timeout, 5xx, 429): keep it and re-send.
    Recoverable,
    /// It failed for good (another 4xx, a malformed answer): re-sending the same request cannot
    /// help.
    Unrecoverable,
}

impl Delivery {
    /// The engine's view: only [`Delivery::Sent`] is a success.
    pub fn outcome(self) -> consent_core::Outcome {
        match self {
            Delivery::Sent => consent_core::Outcome::Success,
            Delivery::Recoverable | Delivery::Unrecoverable => consent_core::Outcome::Failure,
        }
    }
}

/// When and how often a recoverable failure is retried.
///
/// The `n`-th retry waits a random time between zero and `min(max_delay, base_delay * 2^n)` ("full
/// jitter"), and at least as long as the server's `Retry-After`. A `Retry-After` longer than
/// `max_retry_after` ends the retries at once: the error carries it, for the caller to schedule the
/// re-send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` means no retry.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry.
    pub base_delay: Duration,
    /// The cap on the backoff ceiling.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for in place.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, 200 ms doubling up to 10 s, `Retry-After` up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A single attempt, no retry.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff ceiling before retry number `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1_u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Picks the random part of a backoff. Inject a fixed one in tests.
pub trait Jitter: Send + Sync + fmt::Debug {
    /// A duration between zero and `ceiling`, both included.
    fn pick(&self, ceiling: Duration) -> Duration;
}

/// Full jitter from the system's randomness: uniform between zero and the ceiling.
#[derive(Debug, Clone, Copy, Default)]
pub struct FullJitter;

impl Jitter for FullJitter {
    fn pick(&self, ceiling: Duration) -> Duration {
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        match (random_u64(), nanos.checked_add(1)) {
            (Some(r), Some(range)) => Duration::from_nanos(r % range),
            // No randomness: wait the whole ceiling, the safe side for the server.
            _ => ceiling,
        }
    }
}

/// No randomness: always the whole ceiling. Deterministic, for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn pick(&self, ceiling: Duration) -> Duration {
        ceiling
    }
}

/// Waits between attempts. Inject one that records and returns at once in tests.
#[async_trait]
pub trait Sleep: Send + Sync + fmt::Debug {
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
}

/// Sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleep;

#[async_trait]
impl Sleep for TokioSleep {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt<T, E> {
    /// Finished: success, or a failure not worth retrying.
    Done(Result<T, E>),
    /// A recoverable failure, with the server's `Retry-After` if it sent one.
    Retry(E, Option<Duration>),
}

/// The pieces a retrying client needs.
#[derive(Debug, Clone)]
pub(crate) struct Retrier {
    pub(crate) policy: RetryPolicy,
    pub(crate) jitter: std::sync::Arc<dyn Jitter>,
    pub(crate) sleep: std::sync::Arc<dyn Sleep>,
}

impl Retrier {
    /// Runs `attempt` (given the attempt number, from 1) until it is done, the attempts are used
    /// up, or the server asks to wait longer than the policy allows. Returns the last result and
    /// the number of attempts made.
    pub(crate) async fn run<T, E, F, Fut>(&self, mut attempt: F) -> (Result<T, E>, u32)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let max = self.policy.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt(n).await {
                Attempt::Done(result) => return (result, n),
                Attempt::Retry(error, retry_after) => {
                    if n >= max {
                        return (Err(error), n);
                    }
                    if retry_after.is_some_and(|ra| ra > self.policy.max_retry_after) {
                        return (Err(error), n);
                    }
                    let backoff = self.jitter.pick(self.policy.ceiling(n - 1));
                    let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
                    self.sleep.sleep(wait).await;
                    n += 1;
                }
            }
        }
    }
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (a date in the past is zero).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Duration>>);

    #[async_trait]
    impl Sleep for Recorder {
        async fn sleep(&self, duration: Duration) {
            self.0.lock().unwrap().push(duration);
        }
    }

    fn retrier(policy: RetryPolicy, sleep: Arc<Recorder>) -> Retrier {
        Retrier {
            policy,
            jitter: Arc::new(NoJitter),
            sleep,
        }
    }

    #[test]
    fn ceilings_double_and_are_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
            max_retry_after: Duration::from_secs(1),
        };
        let ceilings: Vec<_> = (0..5).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 700, 700]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(700));
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling() {
        for _ in 0..100 {
            assert!(FullJitter.pick(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
        assert_eq!(FullJitter.pick(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn retries_until_done_with_backoff_and_retry_after() {
        let sleep = Arc::new(Recorder::default());
        let r = retrier(
            RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(15),
                max_retry_after: Duration::from_secs(2),
            },
            Arc::clone(&sleep),
        );
        let (result, attempts) = r
            .run(|n| async move {
                match n {
                    1 | 2 => Attempt::Retry("busy", None),
                    3 => Attempt::Retry("slow down", Some(Duration::from_secs(1))),
                    _ => Attempt::Done(Ok::<_, &str>(n)),
                }
            })
            .await;
        assert_eq!(result, Ok(4));
        assert_eq!(attempts, 4);
        let waits: Vec<_> = sleep
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(waits, [10, 15, 1000]);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_or_a_long_retry_after() {
        let sleep = Arc::new(Recorder::default());
        let r = retrier(
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
            Arc::clone(&sleep),
        );
        let (result, attempts) = r
            .run(|_| async { Attempt::<(), _>::Retry("down", None) })
            .await;
        assert_eq!((result, attempts), (Err("down"), 3));
        let (result, attempts) = r
            .run(|_| async { Attempt::<(), _>::Retry("later", Some(Duration::from_secs(3600))) })
            .await;
        assert_eq!((result, attempts), (Err("later"), 1));
        let (result, attempts) = r
            .run(|_| async { Attempt::<(), _>::Done(Err("bad request")) })
            .await;
        assert_eq!((result, attempts), (Err("bad request"), 1));
        assert_eq!(sleep.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
