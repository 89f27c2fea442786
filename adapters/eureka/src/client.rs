//! The HTTP side: `GET {server}/apps` and `GET {server}/apps/delta` with
//! failover across the configured servers and basic authentication.
//!
//! The client stays on the server that last answered (as Netflix's
//! `RetryableEurekaHttpClient` does) and, when it fails, tries the others in
//! configuration order, each once per fetch. Connection errors, timeouts,
//! HTTP errors and undecodable bodies all move on to the next server.

use std::sync::atomic::{AtomicUsize, Ordering};

use anymesh_support::{SecretError, SecretSource};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;

use crate::config::{AuthConfig, EurekaConfig};
use crate::decode::{decode_applications, Applications};
use crate::error::EurekaError;

/// What a server answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Apps {
        /// Index of the server that answered.
        server: usize,
        apps: Applications,
    },
    /// An HTTP error status (other than `401`) to `/apps/delta`: delta is
    /// disabled (`403`), unknown (`404`) or failing on that server; as
    /// Netflix's client does, fetch in full instead.
    DeltaUnavailable { status: u16 },
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// Service URLs without a trailing `/`.
    servers: Vec<String>,
    current: AtomicUsize,
    auth: Option<AuthConfig>,
}

impl Client {
    pub(crate) fn new(config: &EurekaConfig) -> Result<Self, EurekaError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout.0)
            .connect_timeout(config.request_timeout.0)
            .build()
            .map_err(EurekaError::Client)?;
        Ok(Self {
            http,
            servers: config
                .servers
                .iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            auth: config.auth.clone(),
        })
    }

    /// The URL of server `i`.
    pub(crate) fn server(&self, i: usize) -> &str {
        self.servers.get(i).map_or("", String::as_str)
    }

    /// `GET /apps`.
    pub(crate) async fn full(&self) -> Result<Answer, EurekaError> {
        self.fetch("apps", false).await
    }

    /// `GET /apps/delta`.
    pub(crate) async fn delta(&self) -> Result<Answer, EurekaError> {
        self.fetch("apps/delta", true).await
    }

    async fn fetch(&self, path: &str, delta: bool) -> Result<Answer, EurekaError> {
        let credentials = self.credentials().await?;
        let n = self.servers.len();
        let start = self.current.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for i in 0..n {
            let server = (start + i) % n;
            match self.get(server, path, delta, credentials.as_ref()).await {
                Ok(answer) => {
                    if server != start {
                        tracing::info!(server = %self.server(server), "eureka: now reading from this server");
                    }
                    self.current.store(server, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(error = %e, "eureka server failed; trying the next one");
                    }
                    failures.push(e);
                }
            }
        }
        match (failures.len(), failures.pop()) {
            (1, Some(only)) => Err(only),
            (_, last) => {
                failures.extend(last);
                Err(EurekaError::AllServersFailed(failures))
            }
        }
    }

    async fn get(
        &self,
        server: usize,
        path: &str,
        delta: bool,
        credentials: Option<&(String, String)>,
    ) -> Result<Answer, EurekaError> {
        let url = format!("{}/{path}", self.server(server));
        let mut req = self.http.get(&url).header(ACCEPT, "application/json");
        if let Some((user, password)) = credentials {
            req = req.basic_auth(user, Some(password));
        }
        let request_failed = |source| EurekaError::Request {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(request_failed)?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(EurekaError::Unauthorized {
                url,
                sent_credentials: credentials.is_some(),
            });
        }
        if delta && !status.is_success() {
            return Ok(Answer::DeltaUnavailable {
                status: status.as_u16(),
            });
        }
        if status == StatusCode::FORBIDDEN {
            return Err(EurekaError::Forbidden { url });
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(request_failed)?;
        if !status.is_success() {
            return Err(EurekaError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let apps = decode_applications(&body, content_type.as_deref())
            .map_err(|message| EurekaError::Decode { url, message })?;
        Ok(Answer::Apps { server, apps })
    }

    /// The user and password, read now from the file or environment
    /// variable (so a rotated password is picked up). Never logged.
    async fn credentials(&self) -> Result<Option<(String, String)>, EurekaError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        // `validate` makes sure exactly one of the two is set.
        let source =
            SecretSource::from_options(auth.password_file.as_deref(), auth.password_env.as_deref())
                .unwrap_or(SecretSource::Env(""));
        let password = source.read().map_err(|e| match e {
            SecretError::ReadFile { path, source } => EurekaError::ReadPassword { path, source },
            SecretError::EnvNotSet { name } => EurekaError::PasswordEnv { name },
        })?;
        Ok(Some((auth.user.clone(), password)))
    }
}
