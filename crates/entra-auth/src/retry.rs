//! When to try a failed request again, and how long to wait first.
//!
//! Exponential backoff with full jitter, overridden by the service's own `Retry-After`
//! (seconds or HTTP date), `retry-after-ms` or `x-ms-retry-after-ms`; bounded both by a number
//! of attempts and by total elapsed time, so a caller knows the worst case.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::HeaderMap;

/// Bounds and pacing of retries. Attempts *and* elapsed time are both limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total requests, the first included (1 = no retry). Default 5.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles each time. Default 500 ms.
    pub initial_backoff: Duration,
    /// Largest backoff between two attempts (a `Retry-After` may ask for more). Default 30 s.
    pub max_backoff: Duration,
    /// Total time budget from the first request; a wait that would exceed it is not started,
    /// and the last error is returned at once. Default 60 s.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry): a uniformly random
    /// duration between zero and `min(max_backoff, initial_backoff * 2^(retry-1))`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff);
        if ceiling.is_zero() {
            return ceiling;
        }
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// The wait a response asks for: `retry-after-ms`, `x-ms-retry-after-ms`, then `Retry-After`
/// in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(whole_number) {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = text("retry-after")?;
    if let Some(secs) = whole_number(value) {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Digits as a number; more than `u64` holds saturates (a wait longer than any budget, not "no
/// wait").
fn whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(500));
            assert!(p.backoff(3) <= Duration::from_millis(2000));
            assert!(p.backoff(30) <= Duration::from_secs(30));
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(4)).collect();
        assert!(distinct.len() > 1, "full jitter must vary the wait");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));

        let mut h = HeaderMap::new();
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&future).unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            HeaderValue::from_static("300000000000000000000000000"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(u64::MAX)));
        h.insert("retry-after", HeaderValue::from_static("-5"));
        assert_eq!(retry_after(&h), None);
    }
}
