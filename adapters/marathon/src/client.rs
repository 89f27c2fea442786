//! The HTTP side: `GET /v2/apps?embed=apps.tasks` and the `GET /v2/events`
//! stream, with failover across the configured URLs and the DC/OS token.
//!
//! The client stays on the URL that last answered and, when it fails, tries
//! the others in configuration order, each once per attempt. Connection
//! errors, timeouts, HTTP errors and undecodable bodies all move on to the
//! next URL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anymesh_support::{SecretError, SecretSource};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;

use crate::config::{AuthConfig, MarathonConfig};
use crate::decode::{decode_apps, AppList};
use crate::error::MarathonError;

/// The event types the adapter subscribes to (`?event_type=`, Marathon
/// 1.3.7 and later; older servers ignore the filter and send everything).
pub const EVENT_TYPES: [&str; 11] = [
    "status_update_event",
    "health_status_changed_event",
    "app_terminated_event",
    "api_post_event",
    "deployment_success",
    "deployment_failed",
    "deployment_info",
    "deployment_step_success",
    "deployment_step_failure",
    "group_change_success",
    "instance_health_changed_event",
];

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// Without a total timeout: the event stream lasts.
    stream_http: reqwest::Client,
    /// Base URLs without a trailing `/`.
    urls: Vec<String>,
    current: AtomicUsize,
    auth: Option<AuthConfig>,
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(config: &MarathonConfig) -> Result<Self, MarathonError> {
        let timeout = config.request_timeout.0;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(MarathonError::Client)?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(MarathonError::Client)?;
        Ok(Self {
            http,
            stream_http,
            urls: config
                .urls
                .iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            auth: config.auth.clone(),
            timeout,
        })
    }

    /// URL `i`.
    pub(crate) fn url(&self, i: usize) -> &str {
        self.urls.get(i).map_or("", String::as_str)
    }

    /// Opens the event stream on the first URL that answers `200`, starting
    /// with the current one; returns its index and the open response.
    pub(crate) async fn events(&self) -> Result<(usize, reqwest::Response), MarathonError> {
        let token = self.token().await?;
        let query: String = EVENT_TYPES
            .iter()
            .map(|t| format!("event_type={t}"))
            .collect::<Vec<_>>()
            .join("&");
        self.failover(|i| {
            // Errors name the URL without the (long) event filter.
            let url = format!("{}/v2/events", self.url(i));
            let req = self
                .stream_http
                .get(format!("{url}?{query}"))
                .header(ACCEPT, "text/event-stream");
            let token = token.clone();
            async move {
                let resp = self.send(&url, req, token.as_ref()).await?;
                Ok((i, resp))
            }
        })
        .await
    }

    /// `GET /v2/apps?embed=apps.tasks`, from the current URL first (the
    /// one whose event stream is open).
    pub(crate) async fn apps(&self) -> Result<(usize, AppList), MarathonError> {
        let token = self.token().await?;
        self.failover(|i| {
            let url = format!("{}/v2/apps?embed=apps.tasks", self.url(i));
            let req = self.http.get(&url).header(ACCEPT, "application/json");
            let token = token.clone();
            async move {
                let resp = self.send(&url, req, token.as_ref()).await?;
                let body = resp
                    .bytes()
                    .await
                    .map_err(|source| MarathonError::Request {
                        url: url.clone(),
                        source: source.without_url(),
                    })?;
                let list =
                    decode_apps(&body).map_err(|message| MarathonError::Decode { url, message })?;
                Ok((i, list))
            }
        })
        .await
    }

    async fn failover<T, F, Fut>(&self, mut attempt: F) -> Result<T, MarathonError>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, MarathonError>>,
    {
        let n = self.urls.len();
        let start = self.current.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            match attempt(i).await {
                Ok(v) => {
                    if i != start {
                        tracing::info!(url = %self.url(i), "marathon: now reading from this URL");
                    }
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(error = %e, "marathon URL failed; trying the next one");
                    }
                    failures.push(e);
                }
            }
        }
        match (failures.len(), failures.pop()) {
            (1, Some(only)) => Err(only),
            (_, last) => {
                failures.extend(last);
                Err(MarathonError::AllFailed(failures))
            }
        }
    }

    /// Sends with the token and a deadline for the answer's head; maps
    /// error statuses.
    async fn send(
        &self,
        url: &str,
        mut req: reqwest::RequestBuilder,
        token: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, MarathonError> {
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, t.clone());
        }
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(MarathonError::Request {
                    url: url.into(),
                    source: source.without_url(),
                })
            }
            Err(_) => {
                return Err(MarathonError::Timeout {
                    url: url.into(),
                    secs: self.timeout.as_secs_f64(),
                })
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(MarathonError::Unauthorized {
                url: url.into(),
                status: status.as_u16(),
                sent_token: token.is_some(),
            });
        }
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeout, resp.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(MarathonError::Status {
                url: url.into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(resp)
    }

    /// The `Authorization: token=...` header value, read now from the file
    /// or environment variable (a rotated token is picked up), marked
    /// sensitive so it is never logged.
    async fn token(&self) -> Result<Option<HeaderValue>, MarathonError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        // `validate` makes sure exactly one of the two is set.
        let source =
            SecretSource::from_options(auth.token_file.as_deref(), auth.token_env.as_deref())
                .unwrap_or(SecretSource::Env(""));
        let token = source.read().map_err(|e| match e {
            SecretError::ReadFile { path, source } => MarathonError::ReadToken { path, source },
            SecretError::EnvNotSet { name } => MarathonError::TokenEnv { name },
        })?;
        let mut v = HeaderValue::from_str(&format!("token={token}")).map_err(|_| {
            MarathonError::Config {
                message: "the marathon token holds characters not allowed in an HTTP header".into(),
            }
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }
}
