//! [`MarathonConfig`]: which Marathon servers to read and how tasks become
//! endpoints.
//!
//! Deserializable so the binary reads it from `anymesh.yaml`; durations use
//! Go syntax (`30s`, `250ms`) like the rest of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use anymesh_core::config::GoDuration;
use anymesh_support::{check_http_url, UrlProblem};
use serde::Deserialize;

use crate::error::MarathonError;

/// How to reach Marathon and how its tasks become endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MarathonConfig {
    /// Marathon base URLs (`http://marathon-1:8080`, or
    /// `https://dcos.example/service/marathon` behind DC/OS Admin Router),
    /// tried in order: the adapter stays on the first that answers and moves
    /// to the next one when it fails.
    pub urls: Vec<String>,
    /// How an app id becomes a mesh hostname.
    #[serde(default)]
    pub hostname: HostnameStyle,
    /// The template of [`HostnameStyle::Template`] (`{name}`, `{group}`,
    /// `{reversed}`, `{joined}`).
    #[serde(default)]
    pub hostname_template: Option<String>,
    /// Which address a task is reached at.
    #[serde(default)]
    pub address: AddressMode,
    /// DC/OS-style token authentication (`Authorization: token=<token>`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// How long one request (or the opening of the event stream) may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: GoDuration,
    /// An event stream silent for this long (no event, no heartbeat; Marathon
    /// sends one every 10 s) is considered dead and reopened.
    #[serde(default = "default_stream_idle_timeout")]
    pub stream_idle_timeout: GoDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
}

/// How an app id (`/prod/shop/web`) becomes a mesh hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostnameStyle {
    /// Path segments reversed into a DNS name: `web.shop.prod` (the default).
    #[default]
    Reversed,
    /// Path segments joined with `-`: `prod-shop-web`.
    Joined,
    /// `hostname_template` with its placeholders filled in.
    Template,
}

/// Where a task's endpoint address and ports come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressMode {
    /// From the app's networking: host and bridge networking use the agent
    /// (`host`) and the task's host ports; container (IP-per-task)
    /// networking uses the task's `ipAddresses` and the container ports.
    #[default]
    Auto,
    /// Always the agent (`host`) and the host ports.
    Host,
    /// Always the task IP (`ipAddresses`) and the container ports.
    Container,
}

/// Where the DC/OS token is kept. It is read at every request (a rotated
/// token is picked up) and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AuthConfig {
    /// A file holding the token (a trailing newline is ignored).
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding the token.
    pub token_env: Option<String>,
}

/// The `backoff:` block; the first delay defaults to 500 ms.
pub type BackoffConfig = anymesh_core::backoff::BackoffConfig<500>;

fn default_request_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(10))
}
fn default_stream_idle_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(35))
}

/// The placeholders a hostname template may use.
pub(crate) const TEMPLATE_PLACEHOLDERS: [&str; 4] = ["{name}", "{group}", "{reversed}", "{joined}"];

impl MarathonConfig {
    /// A configuration with defaults for everything but the URLs.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            hostname: HostnameStyle::default(),
            hostname_template: None,
            address: AddressMode::default(),
            auth: None,
            request_timeout: default_request_timeout(),
            stream_idle_timeout: default_stream_idle_timeout(),
            backoff: BackoffConfig::default(),
        }
    }

    /// Checks what can be checked without touching the network or files.
    pub fn validate(&self) -> Result<(), MarathonError> {
        let bad = |message: String| Err(MarathonError::Config { message });
        if self.urls.is_empty() {
            return bad("`urls` must list at least one Marathon URL".into());
        }
        for (i, s) in self.urls.iter().enumerate() {
            match check_http_url(s) {
                Ok(()) => {}
                Err(UrlProblem::Credentials) => {
                    return bad(format!(
                        "`urls[{i}]` carries credentials in the URL; use `auth` (with \
                         `token_file` or `token_env`) so they are never logged"
                    ))
                }
                Err(problem) => return bad(format!("`urls[{i}]` {s:?} {problem}")),
            }
        }
        match (self.hostname, &self.hostname_template) {
            (HostnameStyle::Template, None) => {
                return bad("`hostname: template` needs `hostname_template`".into());
            }
            (HostnameStyle::Template, Some(t)) => check_template(t).or_else(bad)?,
            (_, Some(_)) => {
                return bad("`hostname_template` is only used with `hostname: template`".into());
            }
            (_, None) => {}
        }
        if let Some(auth) = &self.auth {
            if auth.token_file.is_some() == auth.token_env.is_some() {
                return bad("`auth` needs exactly one of `token_file` and `token_env`".into());
            }
        }
        if let Err(why) = self.backoff.check() {
            return bad(why.into());
        }
        for (name, d) in [
            ("request_timeout", self.request_timeout),
            ("stream_idle_timeout", self.stream_idle_timeout),
        ] {
            if d.0.is_zero() {
                return bad(format!("`{name}` must be above 0"));
            }
        }
        Ok(())
    }
}

/// A template uses at least one placeholder and no unknown one.
fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    let mut used = false;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("`hostname_template` {t:?} has an unclosed `{{`"));
        };
        let ph = &rest[open..open + close + 1];
        if !TEMPLATE_PLACEHOLDERS.contains(&ph) {
            return Err(format!(
                "`hostname_template` {t:?} uses unknown placeholder {ph}; known: {}",
                TEMPLATE_PLACEHOLDERS.join(", ")
            ));
        }
        used = true;
        rest = &rest[open + close + 1..];
    }
    if !used {
        return Err(format!(
            "`hostname_template` {t:?} uses no placeholder, so every app would get the same hostname"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let c: MarathonConfig = serde_yaml_ng::from_str(
            "urls: [http://127.0.0.1:8080, http://127.0.0.2:8080/]\n\
             hostname: template\nhostname_template: '{name}.{group}.marathon'\n\
             address: container\nauth: {token_env: DCOS_TOKEN}\n",
        )
        .unwrap();
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.hostname, HostnameStyle::Template);
        assert_eq!(c.address, AddressMode::Container);
        assert_eq!(c.request_timeout.0, Duration::from_secs(10));
        assert_eq!(
            c.auth.as_ref().unwrap().token_env.as_deref(),
            Some("DCOS_TOKEN")
        );
        c.validate().unwrap();
        let d: MarathonConfig = serde_yaml_ng::from_str("urls: [http://m:8080]\n").unwrap();
        assert_eq!(d.hostname, HostnameStyle::Reversed);
        assert_eq!(d.address, AddressMode::Auto);
        d.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let e = serde_yaml_ng::from_str::<MarathonConfig>("urls: [a]\ntoken: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `token`"), "{e}");
        let msg = |c: &MarathonConfig| c.validate().unwrap_err().to_string();
        assert!(msg(&MarathonConfig::new(Vec::<String>::new())).contains("at least one"));
        assert!(msg(&MarathonConfig::new(["marathon:8080"])).contains("not an http(s) URL"));
        let e = msg(&MarathonConfig::new(["http://u:secret@m:8080"]));
        assert!(e.contains("credentials") && !e.contains("secret"), "{e}");
        let mut c = MarathonConfig::new(["http://m:8080"]);
        c.auth = Some(AuthConfig {
            token_file: None,
            token_env: None,
        });
        assert!(msg(&c).contains("exactly one"));
        let mut c = MarathonConfig::new(["http://m:8080"]);
        c.hostname = HostnameStyle::Template;
        assert!(msg(&c).contains("needs `hostname_template`"));
        c.hostname_template = Some("{nme}.mesh".into());
        assert!(msg(&c).contains("unknown placeholder {nme}"), "{}", msg(&c));
        c.hostname_template = Some("static".into());
        assert!(msg(&c).contains("no placeholder"));
        c.hostname = HostnameStyle::Joined;
        assert!(msg(&c).contains("only used with"));
    }
}
