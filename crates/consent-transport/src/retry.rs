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

/// When and how often a recoverable failure is retried, and how long one send may take.
///
/// The `n`-th retry waits a random time between zero and `min(max_delay, base_delay * 2^n)` ("full
/// jitter"), and at least as long as the server's `Retry-After`. A `Retry-After` longer than
/// `max_retry_after` ends the retries at once: the error carries it, for the caller to schedule the
/// re-send. Whatever the server sends, a send ends within `deadline`: an attempt still running then
/// is abandoned ([`crate::SendError::DeadlineExceeded`]), and a wait that would end past it is not
/// started (the last failure is returned instead). A `Retry-After` is read as at most
/// `retry_after_cap`, so a huge value can neither stall a caller nor overflow the `Instant` it
/// schedules with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` means no retry.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry.
    pub base_delay: Duration,
    /// The cap on the backoff ceiling.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for in place.
    pub max_retry_after: Duration,
    /// The longest one send may take, every attempt and wait included.
    pub deadline: Duration,
    /// The largest `Retry-After` believed; a larger one is read as this.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, 200 ms doubling up to 10 s, `Retry-After` up to 60 s waited in place and
    /// believed up to one day, and one minute for the whole send.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            deadline: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(86_400),
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

    /// This policy with `max_attempts` attempts in all.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// This policy with backoff ceilings from `base` doubling up to `max`.
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max;
        self
    }

    /// This policy waiting in place for a `Retry-After` up to `max`.
    #[must_use]
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// This policy with an overall deadline per send.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// This policy believing a `Retry-After` up to `cap`.
    #[must_use]
    pub fn with_retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
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
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) enum Attempt<T, E> {
    /// Finished: success, or a failure not worth retrying.
    Done(Result<T, E>),
    /// A recoverable failure, with the server's `Retry-After` if it sent one.
    Retry(E, Option<Duration>),
}

/// The pieces a retrying client needs.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) struct Retrier {
    pub(crate) policy: RetryPolicy,
    pub(crate) jitter: std::sync::Arc<dyn Jitter>,
    pub(crate) sleep: std::sync::Arc<dyn Sleep>,
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl Retrier {
    /// Runs `attempt` (given the attempt number, from 1) until it is done, the attempts are used
    /// up, the server asks to wait longer than the policy allows, or the policy's deadline would
    /// pass. Returns the last result and the number of attempts made; `deadline` makes the error
    /// for an attempt the deadline cut short.
    ///
    /// The time spent is the attempts' time on the tokio clock plus the waits asked of
    /// [`Sleep`], so an injected sleep that returns at once still counts its waits.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        deadline: impl FnOnce() -> E,
    ) -> (Result<T, E>, u32)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let max = self.policy.max_attempts.max(1);
        let mut spent = Duration::ZERO;
        let mut n = 1;
        loop {
            let left = self.policy.deadline.saturating_sub(spent);
            let started = tokio::time::Instant::now();
            let outcome = tokio::time::timeout(left, attempt(n)).await;
            spent = spent.saturating_add(started.elapsed());
            let Ok(outcome) = outcome else {
                return (Err(deadline()), n);
            };
            match outcome {
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
                    if spent.saturating_add(wait) >= self.policy.deadline {
                        return (Err(error), n);
                    }
                    self.sleep.sleep(wait).await;
                    spent = spent.saturating_add(wait);
                    n += 1;
                }
            }
        }
    }
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (a date in the past is zero); a value
/// larger than `cap` is read as `cap`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(cap))
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
    fn the_default_policy_bounds_a_send_to_one_minute() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.deadline, Duration::from_secs(60));
        assert_eq!(policy.retry_after_cap, Duration::from_secs(86_400));
        assert_eq!(policy.max_retry_after, Duration::from_secs(60));
        assert_eq!(RetryPolicy::no_retry().deadline, policy.deadline);
    }

    #[test]
    fn ceilings_double_and_are_capped() {
        let policy = RetryPolicy::default()
            .with_max_attempts(10)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(700));
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
            RetryPolicy::default()
                .with_max_attempts(5)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(15))
                .with_max_retry_after(Duration::from_secs(2)),
            Arc::clone(&sleep),
        );
        let (result, attempts) = r
            .run(
                |n| async move {
                    match n {
                        1 | 2 => Attempt::Retry("busy", None),
                        3 => Attempt::Retry("slow down", Some(Duration::from_secs(1))),
                        _ => Attempt::Done(Ok::<_, &str>(n)),
                    }
                },
                || "deadline",
            )
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
            RetryPolicy::default().with_max_attempts(3),
            Arc::clone(&sleep),
        );
        let (result, attempts) = r
            .run(
                |_| async { Attempt::<(), _>::Retry("down", None) },
                || "deadline",
            )
            .await;
        assert_eq!((result, attempts), (Err("down"), 3));
        let (result, attempts) = r
            .run(
                |_| async { Attempt::<(), _>::Retry("later", Some(Duration::from_secs(3600))) },
                || "deadline",
            )
            .await;
        assert_eq!((result, attempts), (Err("later"), 1));
        let (result, attempts) = r
            .run(
                |_| async { Attempt::<(), _>::Done(Err("bad request")) },
                || "deadline",
            )
            .await;
        assert_eq!((result, attempts), (Err("bad request"), 1));
        assert_eq!(sleep.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let cap = Duration::from_secs(86_400);
        let parse = |v| parse_retry_after(v, now, cap);
        assert_eq!(parse(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("1e9"), None);
        // Huge values are read as the cap: a caller can add them to an Instant.
        for huge in [
            "18446744073709551615",
            "99999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let wait = parse(huge).unwrap();
            assert_eq!(wait, cap, "{huge}");
            assert!(std::time::Instant::now().checked_add(wait).is_some());
        }
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_waits_of_one_send() {
        // Retry-After: 60 on every answer, 100 attempts allowed: without a deadline the send
        // would wait 99 minutes. With 150 s it waits twice (0 + 60 + 60 = 120 s spent; a third
        // wait would end at 180 s) and returns the last failure.
        let sleep = Arc::new(Recorder::default());
        let r = retrier(
            RetryPolicy::default()
                .with_max_attempts(100)
                .with_deadline(Duration::from_secs(150)),
            Arc::clone(&sleep),
        );
        let (result, attempts) = r
            .run(
                |_| async { Attempt::<(), _>::Retry("busy", Some(Duration::from_secs(60))) },
                || "deadline",
            )
            .await;
        assert_eq!((result, attempts), (Err("busy"), 3));
        assert_eq!(
            sleep.0.lock().unwrap().clone(),
            vec![Duration::from_secs(60); 2]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_never_ends_is_cut_at_the_deadline() {
        let r = Retrier {
            policy: RetryPolicy::default().with_deadline(Duration::from_secs(5)),
            jitter: Arc::new(NoJitter),
            sleep: Arc::new(TokioSleep),
        };
        let started = tokio::time::Instant::now();
        let (result, attempts) = r
            .run(
                |_| std::future::pending::<Attempt<(), &str>>(),
                || "deadline",
            )
            .await;
        assert_eq!((result, attempts), (Err("deadline"), 1));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
