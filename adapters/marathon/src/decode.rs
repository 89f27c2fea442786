//! Marathon's JSON: apps with embedded tasks (`/v2/apps?embed=apps.tasks`),
//! task lists (`/v2/tasks`) and event-bus payloads.
//!
//! Only the fields the adapter uses are read; every other field is ignored,
//! and `null` reads as absent wherever Marathon writes it (`"ports": null`,
//! `"startedAt": null`, `"labels": null`). One app that cannot be read is
//! skipped and reported (its index and id), the others are used.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `null` as the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One app with its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// The absolute app id (`/prod/shop/web`).
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Service ports, before `portDefinitions` (Marathon < 0.16 and in
    /// responses of later versions too).
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub port_definitions: Vec<PortDefinition>,
    #[serde(default)]
    pub container: Option<Container>,
    /// Marathon 1.5 networking (`host`, `container/bridge`, `container`).
    #[serde(default, deserialize_with = "nullable")]
    pub networks: Vec<Network>,
    /// IP-per-task before 1.5 (`"ipAddress": {"networkName": ...}`).
    #[serde(default)]
    pub ip_address: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub health_checks: Vec<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub instances: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
}

/// One entry of `portDefinitions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// Transport: `tcp`, `udp` or `udp,tcp`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// The app's container, only as far as networking and ports go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Marathon 1.5 and later.
    #[serde(default, deserialize_with = "nullable")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub docker: Option<Docker>,
}

/// `container.docker` (before 1.5 it held networking and port mappings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: Option<String>,
    /// `HOST`, `BRIDGE`, `USER` or `NONE`.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub port_mappings: Vec<PortMapping>,
}

/// One container port mapping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: u32,
    #[serde(default)]
    pub host_port: Option<u32>,
    #[serde(default)]
    pub service_port: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `networks`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One task (a Mesos task of an app).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    /// The agent's host name or IP.
    #[serde(default)]
    pub host: Option<String>,
    /// Host ports.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub service_ports: Vec<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub ip_addresses: Vec<TaskIp>,
    /// `TASK_RUNNING` and the like; absent before Marathon 0.15.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub staged_at: Option<String>,
    /// `null` while the task is staging.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub slave_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub health_check_results: Vec<HealthCheckResult>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

/// One entry of `ipAddresses`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIp {
    pub ip_address: String,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// The result of one health check of a task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub alive: bool,
    #[serde(default)]
    pub consecutive_failures: u64,
    #[serde(default)]
    pub first_success: Option<String>,
    #[serde(default)]
    pub last_success: Option<String>,
    #[serde(default)]
    pub last_failure: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// The apps of one `/v2/apps` (or `/v2/apps/{id}`) response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppList {
    pub apps: Vec<App>,
    /// Apps that could not be read: `apps[3] (/id): why`.
    pub problems: Vec<String>,
}

/// Reads `{"apps":[...]}` (`GET /v2/apps`) or `{"app":{...}}`
/// (`GET /v2/apps/{id}`). A body that is neither is an error; an app that
/// cannot be read is skipped and named in [`AppList::problems`].
pub fn decode_apps(body: &[u8]) -> Result<AppList, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items: Vec<Value> = match (doc.get("apps"), doc.get("app")) {
        (Some(Value::Array(a)), _) => a.clone(),
        (_, Some(app @ Value::Object(_))) => vec![app.clone()],
        _ => {
            return Err("the body has neither an `apps` array nor an `app` object".into());
        }
    };
    let mut out = AppList::default();
    for (i, item) in items.into_iter().enumerate() {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_default();
        match serde_json::from_value::<App>(item) {
            Ok(app) => out.apps.push(app),
            Err(e) => out.problems.push(format!("apps[{i}] ({id:?}): {e}")),
        }
    }
    Ok(out)
}

/// Reads `{"tasks":[...]}` (`GET /v2/tasks`, `GET /v2/apps/{id}/tasks`).
pub fn decode_tasks(body: &[u8]) -> Result<Vec<Task>, String> {
    #[derive(Deserialize)]
    struct Tasks {
        tasks: Vec<Task>,
    }
    serde_json::from_slice::<Tasks>(body)
        .map(|t| t.tasks)
        .map_err(|e| format!("not a task list: {e}"))
}

/// The event-bus events the adapter acts on; every other type is
/// [`Event::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `status_update_event`: a task changed state.
    StatusUpdate {
        app_id: String,
        task_id: String,
        status: String,
    },
    /// `health_status_changed_event`: `instanceId` (1.4+) or `taskId` (before).
    HealthChanged {
        app_id: String,
        id: String,
        alive: bool,
    },
    /// `app_terminated_event`: the app is gone.
    AppTerminated {
        app_id: String,
    },
    /// A deployment or API change (`deployment_*`, `api_post_event`,
    /// `group_change_success`, ...): apps may have changed.
    AppsChanged {
        kind: String,
    },
    /// `event_stream_attached`.
    Attached,
    Other {
        kind: String,
    },
}

/// Terminal task states: the task is gone for good.
pub const TERMINAL_STATES: [&str; 8] = [
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

/// Event types after which the app list is fetched again.
const APP_CHANGES: [&str; 9] = [
    "api_post_event",
    "deployment_success",
    "deployment_failed",
    "deployment_info",
    "deployment_step_success",
    "deployment_step_failure",
    "group_change_success",
    "instance_changed_event",
    "instance_health_changed_event",
];

/// Reads one event from its SSE `event:` name (if any) and `data:` payload.
/// The payload's `eventType` decides when there is no name (old Marathon).
pub fn decode_event(name: Option<&str>, data: &str) -> Result<Event, String> {
    let v: Value =
        serde_json::from_str(data).map_err(|e| format!("event data is not JSON: {e}"))?;
    let kind = match name {
        Some(n) if !n.is_empty() && n != "message" => n.to_string(),
        _ => v
            .get("eventType")
            .and_then(Value::as_str)
            .ok_or("an event with neither an `event:` name nor an `eventType`")?
            .to_string(),
    };
    let s = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let need = |key: &str| s(key).ok_or_else(|| format!("{kind} without `{key}`"));
    Ok(match kind.as_str() {
        "status_update_event" => Event::StatusUpdate {
            app_id: need("appId")?,
            task_id: need("taskId")?,
            status: need("taskStatus")?,
        },
        "health_status_changed_event" => Event::HealthChanged {
            app_id: need("appId")?,
            id: s("instanceId")
                .or_else(|| s("taskId"))
                .ok_or_else(|| format!("{kind} without `instanceId` or `taskId`"))?,
            alive: v
                .get("alive")
                .and_then(Value::as_bool)
                .ok_or_else(|| format!("{kind} without a boolean `alive`"))?,
        },
        "app_terminated_event" => Event::AppTerminated {
            app_id: need("appId")?,
        },
        "event_stream_attached" => Event::Attached,
        k if APP_CHANGES.contains(&k) => Event::AppsChanged { kind },
        _ => Event::Other { kind },
    })
}

#[cfg(test)]
mod tests;
