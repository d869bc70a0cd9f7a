//! When each job runs next, in daemon mode: the timing rules and the one queue of due times.
//!
//! `refresh_before` is a promise about what a target holds: a token valid for at least that
//! long. So the daemon refreshes a job *ahead* of its refresh point (the earliest expiry among
//! its targets minus `refresh_before`): it renews what expires within `refresh_before` plus a
//! [`lead`] (half of `refresh_before`, at most [`LEAD_MAX`]), and fires each job at a random
//! moment in the first half of that lead, so jobs written together do not all fire in the same
//! instant and the second half is left for queueing and slow backends. A pass that failed, or
//! that could not get a newer token, backs off exponentially with jitter, but never waits
//! longer than a quarter of the time its tokens still have, so a retry always comes well
//! before they expire. Once a target holds an expired token or none, that cap bounds nothing,
//! so such a job retries at the latest [`EXPIRED_RETRY`] after the start of its failed pass, in
//! a shared round ([`Rounds`]): jobs that wait for the same outage to end retry together, so
//! jobs with the same credentials meet in the token cache's single flight and send one request.
//!
//! The queue is a binary heap of (due instant, job index) read by the daemon's single loop with
//! `tokio::time::sleep_until`: 10,000 jobs are 10,000 small heap entries, not 10,000 tasks.
//! A job is in the queue or running, never both, so entries need no cancellation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

/// The longest lead: however long `refresh_before`, the daemon renews at most this much earlier.
pub const LEAD_MAX: Duration = Duration::from_secs(5 * 60);
/// The most a job waits after the start of its lead window, so that the engine sees its targets
/// as due (expiries are recorded to the second); it is also at most a tenth of the lead.
pub const SLACK: Duration = Duration::from_secs(1);
/// The first wait after a failure; each further failure doubles it.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// The longest wait after failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// The shortest wait after a failure, however close the expiry.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// While a target holds an expired token or none, the longest time from the start of a failed
/// pass to the next one (each round is drawn between half and all of it): after an outage
/// longer than the tokens' life, the daemon is back within this of the service's return.
pub const EXPIRED_RETRY: Duration = Duration::from_secs(30);

/// How far ahead of its refresh point the daemon renews a job: half of `refresh_before`,
/// at most [`LEAD_MAX`].
pub fn lead(refresh_before: Duration) -> Duration {
    (refresh_before / 2).min(LEAD_MAX)
}

/// The timing rules for one config (they depend on its `refresh_before`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub refresh_before: Duration,
}

impl Timing {
    /// How far ahead of the refresh point jobs are renewed ([`lead`]).
    pub fn lead(&self) -> Duration {
        lead(self.refresh_before)
    }

    /// What the daemon renews: targets whose token expires within this (`refresh_before` plus
    /// the lead). The daemon's engine and token cache use it as their `refresh_before`.
    pub fn renew_within(&self) -> Duration {
        self.refresh_before + self.lead()
    }

    /// How long to wait after a pass that left every target with a token valid beyond
    /// [`Timing::renew_within`], the earliest expiring at `earliest_expiry`. `sample` is a
    /// random number ([`random_sample`]) that picks the moment: between the start of the lead
    /// window (plus a little slack) and its middle, so never later than `earliest_expiry -
    /// refresh_before - lead / 2`.
    pub fn after_success(
        &self,
        earliest_expiry: OffsetDateTime,
        now: OffsetDateTime,
        sample: u64,
    ) -> Duration {
        let lead = self.lead();
        let window_start = earliest_expiry - self.renew_within();
        let slack = SLACK.min(lead / 10);
        let spread = (lead / 2).saturating_sub(slack);
        non_negative(window_start - now) + slack + spread.mul_f64(fraction(sample))
    }

    /// How long to wait after the `failures`-th pass in a row that failed or could not renew
    /// the tokens; `earliest_expiry` is that of the tokens the targets still hold, if known.
    /// The wait doubles from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`], each one drawn between
    /// half and all of it, and is at most a quarter of the time left before `earliest_expiry`.
    pub fn after_failure(
        &self,
        failures: u32,
        earliest_expiry: Option<OffsetDateTime>,
        now: OffsetDateTime,
        sample: u64,
    ) -> Duration {
        let mut wait = backoff(failures, BACKOFF_MAX, sample);
        if let Some(expiry) = earliest_expiry
            && expiry > now
        {
            wait = wait.min(non_negative(expiry - now) / 4);
        }
        wait.max(BACKOFF_MIN)
    }
}

/// The wait after the `failures`-th failure in a row: [`BACKOFF_FIRST`], doubling with each
/// further one up to `max`, drawn between half and all of that (`sample`, [`random_sample`]), so
/// that what failed together does not retry in the same instant. The token jobs' backoff
/// ([`Timing::after_failure`]) and the daemon's credential checks (`max` = `check_every`).
pub fn backoff(failures: u32, max: Duration, sample: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = BACKOFF_FIRST.saturating_mul(1 << doublings).min(max);
    full / 2 + (full / 2).mul_f64(fraction(sample))
}

/// Whether a pass left a target with an expired token or none: `earliest_expiry` is the
/// earliest expiry its targets hold, `None` when one holds no token (or its expiry is unknown).
pub fn holds_expired(earliest_expiry: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    earliest_expiry.is_none_or(|expiry| expiry <= now)
}

/// The retry rounds of the jobs whose targets hold an expired token or none (one config's).
///
/// A job whose failed pass started at `started` retries by `started` + [`EXPIRED_RETRY`] at
/// the latest: in the coming round when that is soon enough, else in a new one drawn between
/// half and all of [`EXPIRED_RETRY`] after `started`. Jobs that failed in the same round start
/// the next one together, so those with the same credentials share one token request (the
/// token cache's single flight) instead of one each at scattered moments.
#[derive(Debug, Default)]
pub struct Rounds {
    next: Option<Instant>,
}

impl Rounds {
    /// When the job retries at the latest (never sooner than [`BACKOFF_MIN`] from `now`).
    pub fn join(&mut self, started: Instant, now: Instant, sample: u64) -> Instant {
        let soonest = now + BACKOFF_MIN;
        let latest = (started + EXPIRED_RETRY).max(soonest);
        if let Some(at) = self.next
            && at >= soonest
            && at <= latest
        {
            return at;
        }
        let half = EXPIRED_RETRY / 2;
        let at = (started + half + half.mul_f64(fraction(sample))).max(soonest);
        self.next = Some(at);
        at
    }
}

/// A random number for jitter, from the standard library's randomly keyed hasher.
pub fn random_sample() -> u64 {
    // Each RandomState has new keys, so hashing nothing gives a new number every time.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `sample` as a number in [0, 1].
fn fraction(sample: u64) -> f64 {
    // Precision loss is fine: this only spreads waits.
    #[allow(clippy::cast_precision_loss)]
    let f = sample as f64 / u64::MAX as f64;
    f.clamp(0.0, 1.0)
}

fn non_negative(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// The due times of the jobs that are waiting, by job index.
#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Self {
        Queue::default()
    }

    /// Job `job` is due at `at`. The caller keeps each job in the queue at most once.
    pub fn push(&mut self, job: usize, at: Instant) {
        self.heap.push(Reverse((at, job)));
    }

    /// When the next job is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next job due at or before `now`, removed from the queue.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, job))| job),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 06:00 UTC);
    const TIMING: Timing = Timing {
        refresh_before: Duration::from_secs(15 * 60),
    };

    fn secs(s: i64) -> time::Duration {
        time::Duration::seconds(s)
    }

    #[test]
    fn a_fresh_job_runs_in_the_first_half_of_the_lead_before_its_refresh_point() {
        // refresh_before 15 min: lead 7m30s, capped at 5 min; renew within 20 min.
        assert_eq!(TIMING.lead(), LEAD_MAX);
        assert_eq!(TIMING.renew_within(), Duration::from_secs(1200));
        // A token valid 60 more minutes: refresh point in 45 minutes, lead window from 40m.
        let expiry = NOW + secs(3600);
        let earliest = TIMING.after_success(expiry, NOW, 0);
        let latest = TIMING.after_success(expiry, NOW, u64::MAX);
        assert_eq!(earliest, Duration::from_secs(2400) + SLACK);
        // The latest moment is the middle of the lead: 45m - 2m30s.
        assert_eq!(latest, Duration::from_secs(2550));
        assert!(latest < Duration::from_secs(45 * 60));

        // A short refresh_before (the bench's 20 s): lead 10 s, slack 1 s, fire between 29 s
        // and 25 s before expiry, so at least 5 s before the refresh point.
        let short = Timing {
            refresh_before: Duration::from_secs(20),
        };
        assert_eq!(
            short.after_success(NOW + secs(60), NOW, 0),
            Duration::from_secs(31)
        );
        assert_eq!(
            short.after_success(NOW + secs(60), NOW, u64::MAX),
            Duration::from_secs(35)
        );

        // A very long refresh_before: the lead is capped.
        let long = Timing {
            refresh_before: Duration::from_secs(4 * 3600),
        };
        assert_eq!(long.lead(), LEAD_MAX);
    }

    #[test]
    fn a_lead_window_in_the_past_runs_almost_at_once() {
        let wait = TIMING.after_success(NOW + secs(60), NOW, 0);
        assert_eq!(wait, SLACK);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let waits: Vec<Duration> = (1..=9)
            .map(|n| TIMING.after_failure(n, None, NOW, u64::MAX))
            .collect();
        let expected: Vec<Duration> = [5, 10, 20, 40, 80, 160, 300, 300, 300]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        assert_eq!(waits, expected);
        // The jitter draws between half and all of the wait.
        assert_eq!(
            TIMING.after_failure(3, None, NOW, 0),
            Duration::from_secs(10)
        );
        // Huge failure counts do not overflow.
        assert_eq!(
            TIMING.after_failure(u32::MAX, None, NOW, u64::MAX),
            BACKOFF_MAX
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_the_cap_it_is_given() {
        // The credential checks' cap is check_every (here 1 minute).
        let waits: Vec<Duration> = (1..=6)
            .map(|n| backoff(n, Duration::from_secs(60), u64::MAX))
            .collect();
        let expected: Vec<Duration> = [5, 10, 20, 40, 60, 60]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        assert_eq!(waits, expected);
        assert_eq!(
            backoff(2, Duration::from_secs(60), 0),
            Duration::from_secs(5)
        );
        // A cap below the first wait is the wait.
        assert_eq!(
            backoff(1, Duration::from_secs(2), u64::MAX),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn backoff_always_retries_well_before_the_tokens_expire() {
        // 5 minutes of backoff, but the token expires in 2 minutes: retry within 30 s.
        let wait = TIMING.after_failure(7, Some(NOW + secs(120)), NOW, u64::MAX);
        assert_eq!(wait, Duration::from_secs(30));
        // Very close to expiry (or past it): never a busy loop.
        let wait = TIMING.after_failure(7, Some(NOW + secs(2)), NOW, u64::MAX);
        assert_eq!(wait, BACKOFF_MIN);
        let wait = TIMING.after_failure(2, Some(NOW - secs(10)), NOW, u64::MAX);
        assert_eq!(wait, Duration::from_secs(10));
    }

    #[test]
    fn a_target_with_an_expired_token_or_none_counts_as_expired() {
        assert!(holds_expired(None, NOW));
        assert!(holds_expired(Some(NOW), NOW));
        assert!(holds_expired(Some(NOW - secs(1)), NOW));
        assert!(!holds_expired(Some(NOW + secs(1)), NOW));
    }

    #[test]
    fn jobs_waiting_for_an_outage_to_end_retry_together_within_30_s_of_their_last_start() {
        let start = Instant::now();
        let mut rounds = Rounds::default();
        // A pass that started at 0 and failed at 4 s opens a round 15-30 s after its start.
        let first = rounds.join(start, start + Duration::from_secs(4), 0);
        assert_eq!(first, start + EXPIRED_RETRY / 2);
        let late = Rounds::default().join(start, start + Duration::from_secs(4), u64::MAX);
        assert_eq!(late, start + EXPIRED_RETRY);
        // Another job of the same round, failing a little later, joins it.
        let second = rounds.join(
            start + Duration::from_millis(200),
            start + Duration::from_secs(6),
            u64::MAX,
        );
        assert_eq!(second, first);
        // A job that started 20 s later cannot wait for a round that has passed: a new one.
        let third = rounds.join(
            start + Duration::from_secs(20),
            start + Duration::from_secs(21),
            0,
        );
        assert_eq!(third, start + Duration::from_secs(35));
        // A round that would come more than 30 s after a job's start is not joined.
        let fourth = rounds.join(
            start + Duration::from_secs(1),
            start + Duration::from_secs(2),
            0,
        );
        assert_eq!(fourth, start + Duration::from_secs(16));
        // A pass that ran past the whole period retries almost at once, never in a busy loop.
        let overdue = rounds.join(start, start + Duration::from_secs(60), 0);
        assert_eq!(overdue, start + Duration::from_secs(61));
    }

    #[test]
    fn random_samples_differ() {
        let samples: std::collections::BTreeSet<u64> = (0..20).map(|_| random_sample()).collect();
        assert!(samples.len() > 10, "{samples:?}");
    }

    // The queue is given the time by its caller, so the tests step a clock of their own
    // from one due time to the next, as the daemon's `sleep_until` does.
    #[test]
    fn the_queue_hands_out_jobs_in_due_order_as_time_passes() {
        let start = Instant::now();
        let mut queue = Queue::new();
        queue.push(2, start + Duration::from_secs(30));
        queue.push(0, start + Duration::from_secs(10));
        queue.push(1, start + Duration::from_secs(10));
        assert_eq!(queue.pop_due(start), None, "nothing is due yet");
        assert_eq!(
            queue.pop_due(start + Duration::from_secs(9)),
            None,
            "nothing is due a second early"
        );

        let mut fired = Vec::new();
        while let Some(now) = queue.next_due() {
            while let Some(job) = queue.pop_due(now) {
                fired.push((job, now - start));
            }
        }
        assert_eq!(
            fired,
            [
                (0, Duration::from_secs(10)),
                (1, Duration::from_secs(10)),
                (2, Duration::from_secs(30))
            ]
        );
    }

    #[test]
    fn ten_thousand_jittered_jobs_spread_over_the_lead_and_all_run_before_the_refresh_point() {
        // Every job's token expires at the same moment; jitter spreads the refreshes.
        let timing = Timing {
            refresh_before: Duration::from_secs(20),
        };
        let start = Instant::now();
        let mut queue = Queue::new();
        for job in 0..10_000 {
            let wait = timing.after_success(NOW + secs(60), NOW, random_sample());
            queue.push(job, start + wait);
        }
        let mut per_half_second = std::collections::BTreeMap::<u128, usize>::new();
        let mut ran = 0;
        while let Some(now) = queue.next_due() {
            while queue.pop_due(now).is_some() {
                ran += 1;
                *per_half_second
                    .entry((now - start).as_millis() / 500)
                    .or_default() += 1;
            }
        }
        assert_eq!(ran, 10_000);
        // Refresh point 40 s; lead window from 30 s; +1 s slack; spread over 4 s: every job
        // fires within 31-35 s, at least 5 s before the refresh point.
        assert!(
            per_half_second.keys().all(|h| (62..=70).contains(h)),
            "{per_half_second:?}"
        );
        assert!(
            per_half_second.values().all(|n| *n < 4_000),
            "not spread: {per_half_second:?}"
        );
    }
}
