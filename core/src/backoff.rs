//! Capped exponential backoff with jitter between reconnects, shared by the
//! registry adapters.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::config::GoDuration;

/// The `backoff:` block of a registry's settings: capped exponential backoff
/// between failed attempts. `INITIAL_MS` is the adapter's default first delay;
/// the cap defaults to 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct BackoffConfig<const INITIAL_MS: u64> {
    #[serde(default = "default_initial::<INITIAL_MS>")]
    pub initial: GoDuration,
    #[serde(default = "default_max")]
    pub max: GoDuration,
}

impl<const INITIAL_MS: u64> Default for BackoffConfig<INITIAL_MS> {
    fn default() -> Self {
        Self {
            initial: default_initial::<INITIAL_MS>(),
            max: default_max(),
        }
    }
}

impl<const INITIAL_MS: u64> BackoffConfig<INITIAL_MS> {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.initial.0.is_zero() || self.initial > self.max {
            return Err("`backoff.initial` must be above 0 and at most `backoff.max`");
        }
        Ok(())
    }

    /// A backoff starting from these settings.
    pub fn start(&self) -> Backoff {
        Backoff::new(self.initial.0, self.max.0)
    }
}

fn default_initial<const MS: u64>() -> GoDuration {
    GoDuration(Duration::from_millis(MS))
}

fn default_max() -> GoDuration {
    GoDuration(Duration::from_secs(30))
}

/// Delays that double from `initial` up to `max`; each one is drawn uniformly
/// from its upper half ("equal jitter"), so many proxies restarting together
/// do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// Back to `initial`, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_per_adapter_and_overrides() {
        let d = BackoffConfig::<250>::default();
        assert_eq!(
            (d.initial.0, d.max.0),
            (Duration::from_millis(250), Duration::from_secs(30))
        );
        let c: BackoffConfig<250> = serde_yaml_ng::from_str("max: 5s").expect("yaml");
        assert_eq!(
            (c.initial.0, c.max.0),
            (Duration::from_millis(250), Duration::from_secs(5))
        );
        assert!(serde_yaml_ng::from_str::<BackoffConfig<250>>("maximum: 5s").is_err());
        assert!(c.check().is_ok());
        let zero: BackoffConfig<250> = serde_yaml_ng::from_str("initial: 0s").expect("yaml");
        assert!(zero.check().is_err());
        let inverted: BackoffConfig<250> = serde_yaml_ng::from_str("initial: 1m").expect("yaml");
        assert!(inverted.check().is_err(), "initial above max");
    }

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for ceiling in [100, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(ceiling / 2) && d <= ms(ceiling),
                "{d:?} for {ceiling}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
