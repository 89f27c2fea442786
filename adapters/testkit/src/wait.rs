//! Waiting until a condition holds, with a deadline: never a bare sleep.
//!
//! [`eventually`] polls a plain check, [`eventually_async`] one that has to
//! await (a request, a bind); [`Poll`] sets another deadline or pace. A check
//! returns an [`Outcome`]: `bool`, `Option<T>` (done with a value) or
//! `Result<T, E>` (not yet, and why: the last reason is in the panic message
//! when the deadline passes).
//!
//! Time is tokio's, so tests with `start_paused = true` wait in virtual time.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How long a condition may take to hold, by default (the contract's).
pub const DEADLINE: Duration = crate::contract::DEADLINE;

/// The pause between two checks, by default.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// What a check returns: whether it holds and, if so, the value to return.
pub trait Outcome {
    /// What the wait returns once the check holds.
    type Output;
    /// `Ok` with the value when the check holds; otherwise why not, if known.
    fn settle(self) -> Result<Self::Output, Option<String>>;
}

impl Outcome for bool {
    type Output = ();
    fn settle(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Outcome for Option<T> {
    type Output = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Output = T;
    fn settle(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// A deadline and a pace for polling a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    deadline: Duration,
    interval: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Self::new()
    }
}

impl Poll {
    /// [`DEADLINE`], checking every [`INTERVAL`].
    pub const fn new() -> Self {
        Self {
            deadline: DEADLINE,
            interval: INTERVAL,
        }
    }

    /// Gives up (panics) after `deadline`.
    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Pauses `interval` between checks; `Duration::ZERO` only yields to the
    /// runtime (for benchmarks timing how soon something happens).
    pub const fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Checks until `check` holds and returns its value; panics naming `what`
    /// once the deadline has passed.
    pub async fn until<O: Outcome>(self, what: &str, mut check: impl FnMut() -> O) -> O::Output {
        self.until_async(what, move || std::future::ready(check()))
            .await
    }

    /// [`until`](Self::until) for a check that awaits.
    pub async fn until_async<O, F, Fut>(self, what: &str, mut check: F) -> O::Output
    where
        O: Outcome,
        F: FnMut() -> Fut,
        Fut: Future<Output = O>,
    {
        let deadline = tokio::time::Instant::now() + self.deadline;
        loop {
            let why = match check().await.settle() {
                Ok(v) => return v,
                Err(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                match why {
                    Some(why) => panic!("waited {:?} for {what}; last: {why}", self.deadline),
                    None => panic!("waited {:?} for {what}", self.deadline),
                }
            }
            if self.interval.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(self.interval).await;
            }
        }
    }
}

/// Checks until `check` holds, every [`INTERVAL`]; panics naming `what` after
/// [`DEADLINE`]. Returns the check's value (see [`Outcome`]).
pub async fn eventually<O: Outcome>(what: &str, check: impl FnMut() -> O) -> O::Output {
    Poll::new().until(what, check).await
}

/// [`eventually`] for a check that awaits.
pub async fn eventually_async<O, F, Fut>(what: &str, check: F) -> O::Output
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    Poll::new().until_async(what, check).await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_check_holds() {
        let n = Cell::new(0);
        eventually("three checks", || {
            n.set(n.get() + 1);
            n.get() == 3
        })
        .await;
        assert_eq!(n.get(), 3);
        let v = eventually_async("a value", || async { Some(7) }).await;
        assert_eq!(v, 7);
        let r: u8 = eventually("ok", || Ok::<u8, String>(1)).await;
        assert_eq!(r, 1);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waited 1s for never; last: \"not yet\"")]
    async fn panics_after_the_deadline_with_the_last_reason() {
        Poll::new()
            .deadline(Duration::from_secs(1))
            .until("never", || Err::<(), _>("not yet"))
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn paces_checks_by_the_interval() {
        let start = tokio::time::Instant::now();
        let n = Cell::new(0);
        Poll::new()
            .every(Duration::from_millis(100))
            .until("five checks", || {
                n.set(n.get() + 1);
                n.get() == 5
            })
            .await;
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_zero_interval_yields() {
        let n = Cell::new(0);
        Poll::new()
            .every(Duration::ZERO)
            .until("ten", || {
                n.set(n.get() + 1);
                n.get() == 10
            })
            .await;
        assert_eq!(n.get(), 10);
    }
}
