//! Remote key sets (`jwksUri`): fetched over HTTPS, shared by every
//! authenticator naming the same URI, refreshed in the background.
//!
//! ```text
//!  register(uri) ──► Entry { keys: None }          per request: keys.load()
//!                      │ due now                       │ unknown kid → want_refresh()
//!                      ▼                               ▼   (rate limited; wakes the loop)
//!                   fetch ──ok──► keys = Some(set), next = now + refresh interval
//!                      └──err──► keys kept (None at first: tokens of that issuer get 401),
//!                                next = now + backoff (1 s doubling, capped)
//! ```
//!
//! The loop ([`JwksCache::spawn`]) owns the schedule; fetches run as their
//! own tasks so a slow server delays no other. Requests only read an
//! `ArcSwapOption` and set an atomic flag: they never wait for the network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::jwks::KeySet;
use crate::ConfigError;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How remote key sets are fetched and refreshed.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// CA certificates trusted for `jwksUri` HTTPS besides the public
    /// (webpki) roots, e.g. an operator's or a test's CA.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// How often a fetched set is fetched again (Istio's
    /// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 minutes).
    pub refresh_interval: Duration,
    /// At most one extra fetch of a URI per this interval when tokens name
    /// a `kid` the set does not have (the server rotated its keys); it
    /// bounds what tokens with made-up `kid`s can make the proxy fetch.
    pub unknown_kid_refetch_interval: Duration,
    /// The first retry after a failed fetch; doubled at each further
    /// failure up to `retry_max`.
    pub retry_initial: Duration,
    /// The longest wait between retries of a failing fetch.
    pub retry_max: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            extra_roots: Vec::new(),
            refresh_interval: Duration::from_secs(20 * 60),
            unknown_kid_refetch_interval: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// The key sets of every `jwksUri` in use, shared by all authenticators:
/// several authenticators naming one URI fetch it once. Cheap to clone.
///
/// Nothing is fetched until [`JwksCache::spawn`] runs the refresh loop.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    client: reqwest::Client,
    settings: FetchSettings,
    entries: Mutex<HashMap<String, Weak<Entry>>>,
    wake: Arc<Notify>,
}

/// One `jwksUri`: its keys as last fetched and its fetch state.
pub(crate) struct Entry {
    uri: String,
    timeout: Duration,
    keys: ArcSwapOption<KeySet>,
    /// Finished fetch attempts, successful or not (for `ready`).
    attempts: watch::Sender<u64>,
    /// A request met an unknown `kid`: fetch soon.
    wanted: AtomicBool,
    /// When an unknown `kid` last asked for a fetch, in milliseconds since
    /// `born` (0: never).
    last_wanted_ms: AtomicU64,
    born: std::time::Instant,
    min_wanted_gap: Duration,
    wake: Arc<Notify>,
}

impl Entry {
    /// The keys as last fetched; `None` until a fetch has succeeded.
    pub(crate) fn keys(&self) -> arc_swap::Guard<Option<Arc<KeySet>>> {
        self.keys.load()
    }

    /// Asks for an early fetch: a token named a `kid` the set lacks. Rate
    /// limited per URI; never blocks.
    pub(crate) fn want_refresh(&self) {
        let now = (self.born.elapsed().as_millis() as u64).max(1);
        let last = self.last_wanted_ms.load(Ordering::Relaxed);
        let gap = self.min_wanted_gap.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < gap {
            return;
        }
        if self
            .last_wanted_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!(uri = %self.uri, "jwks: unknown kid, fetching early");
            self.wanted.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// Waits for the first fetch attempt to finish, whatever its outcome.
    pub(crate) async fn attempted(&self) {
        let mut rx = self.attempts.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = rx.wait_for(|n| *n > 0).await;
    }
}

impl JwksCache {
    /// A cache whose fetches trust the public roots plus `settings`'
    /// extra roots.
    pub fn new(settings: FetchSettings) -> Result<JwksCache, ConfigError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("anymesh/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3));
        for root in &settings.extra_roots {
            let cert = reqwest::Certificate::from_der(root).map_err(ConfigError::Client)?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(ConfigError::Client)?;
        Ok(JwksCache {
            inner: Arc::new(CacheInner {
                client,
                settings,
                entries: Mutex::new(HashMap::new()),
                wake: Arc::new(Notify::new()),
            }),
        })
    }

    /// The entry for `uri`, shared with every other user of the URI. The
    /// first user's timeout is the one fetches use.
    pub(crate) fn entry(&self, uri: &str, timeout: Duration) -> Arc<Entry> {
        let mut entries = self.inner.entries.lock();
        if let Some(entry) = entries.get(uri).and_then(Weak::upgrade) {
            return entry;
        }
        let entry = Arc::new(Entry {
            uri: uri.to_owned(),
            timeout,
            keys: ArcSwapOption::empty(),
            attempts: watch::Sender::new(0),
            wanted: AtomicBool::new(false),
            last_wanted_ms: AtomicU64::new(0),
            born: std::time::Instant::now(),
            min_wanted_gap: self.inner.settings.unknown_kid_refetch_interval,
            wake: self.inner.wake.clone(),
        });
        entries.insert(uri.to_owned(), Arc::downgrade(&entry));
        drop(entries);
        self.inner.wake.notify_one();
        entry
    }

    /// Starts the refresh loop on the current tokio runtime: every URI in
    /// use is fetched at once, then every refresh interval, after failures
    /// with backoff, and early when a token names an unknown `kid`. The
    /// loop ends when the last clone of the cache is dropped (or when the
    /// handle is aborted).
    pub fn spawn(&self) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        tokio::spawn(run(weak, wake))
    }
}

/// Per-URI schedule kept by the loop.
struct Schedule {
    next: Instant,
    failures: u32,
    in_flight: bool,
}

async fn run(cache: Weak<CacheInner>, wake: Arc<Notify>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, bool)>();
    let mut schedule: HashMap<String, Schedule> = HashMap::new();
    loop {
        let Some(inner) = cache.upgrade() else { return };
        let now = Instant::now();
        let live: Vec<Arc<Entry>> = {
            let mut entries = inner.entries.lock();
            entries.retain(|_, weak| weak.strong_count() > 0);
            entries.values().filter_map(Weak::upgrade).collect()
        };
        schedule.retain(|uri, _| live.iter().any(|e| &e.uri == uri));
        let mut next_wake: Option<Instant> = None;
        for entry in live {
            let sched = schedule.entry(entry.uri.clone()).or_insert(Schedule {
                next: now,
                failures: 0,
                in_flight: false,
            });
            if sched.in_flight {
                continue;
            }
            if entry.wanted.swap(false, Ordering::AcqRel) {
                sched.next = now;
            }
            if sched.next <= now {
                sched.in_flight = true;
                let client = inner.client.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let ok = fetch(&client, &entry).await;
                    let _ = done.send((entry.uri.clone(), ok));
                });
            } else {
                next_wake = Some(next_wake.map_or(sched.next, |w| w.min(sched.next)));
            }
        }
        let settings = inner.settings.clone();
        drop(inner);

        let sleep = async {
            match next_wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = wake.notified() => {}
            done = done_rx.recv() => {
                let Some((uri, ok)) = done else { return };
                if let Some(sched) = schedule.get_mut(&uri) {
                    sched.in_flight = false;
                    let now = Instant::now();
                    if ok {
                        sched.failures = 0;
                        sched.next = now + settings.refresh_interval;
                    } else {
                        let backoff = settings
                            .retry_initial
                            .saturating_mul(1 << sched.failures.min(16))
                            .min(settings.retry_max)
                            .min(settings.refresh_interval);
                        sched.failures = sched.failures.saturating_add(1);
                        sched.next = now + backoff;
                    }
                }
            }
        }
    }
}

/// Fetches one URI and installs its keys; a failure keeps the keys already
/// there. Returns whether the fetch succeeded.
async fn fetch(client: &reqwest::Client, entry: &Entry) -> bool {
    let result = fetch_doc(client, &entry.uri, entry.timeout)
        .await
        .and_then(|doc| KeySet::parse(&doc));
    let ok = match result {
        Ok(set) => {
            tracing::debug!(uri = %entry.uri, keys = set.keys.len(), "jwks fetched");
            entry.keys.store(Some(Arc::new(set)));
            true
        }
        Err(reason) => {
            let stale = entry.keys.load().is_some();
            if stale {
                tracing::warn!(uri = %entry.uri, %reason, "jwks fetch failed; keeping the last keys");
            } else {
                tracing::warn!(uri = %entry.uri, %reason, "jwks fetch failed; tokens of this issuer are refused");
            }
            false
        }
    };
    entry.attempts.send_modify(|n| *n += 1);
    ok
}

async fn fetch_doc(
    client: &reqwest::Client,
    uri: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(uri)
        .timeout(timeout)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("Jwks remote fetch is failed: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "Jwks remote fetch is failed: status {}",
            resp.status()
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("Jwks remote fetch is failed: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("Jwks larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
