//! Apps and tasks as Marathon writes them (the fixtures' shapes).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{FakeApp, FakeNetworking, FakeTask, Shape};

/// A fixed, increasing ISO-8601 timestamp.
pub(super) fn timestamp(seq: u64) -> String {
    format!(
        "2026-01-01T00:{:02}:{:02}.{:03}Z",
        (seq / 60_000) % 60,
        (seq / 1000) % 60,
        seq % 1000
    )
}

/// Marathon 1.4+ instance id of a task id (`app.instance-<uuid>._app.1` →
/// `app.instance-<uuid>`); the task id itself otherwise.
pub(super) fn instance_id(task_id: &str) -> String {
    match task_id.rsplit_once("._app.") {
        Some((instance, _)) => instance.into(),
        None => task_id.into(),
    }
}

/// A Mesos agent id for a host.
pub(super) fn agent_id(host: &str) -> String {
    format!("fake-agent-{host}-S0")
}

/// `{"apps":[...]}`.
pub(super) fn apps(apps: &BTreeMap<String, FakeApp>, shape: Shape, with_tasks: bool) -> Value {
    json!({ "apps": apps.values().map(|a| app(a, shape, with_tasks)).collect::<Vec<_>>() })
}

/// `{"tasks":[...]}` as `/v2/tasks` writes it.
pub(super) fn tasks(apps: &BTreeMap<String, FakeApp>, shape: Shape) -> Value {
    let mut out = Vec::new();
    for a in apps.values() {
        for t in a.tasks.values() {
            let mut v = task(a, t, shape);
            if let Value::Object(m) = &mut v {
                m.insert(
                    "servicePorts".into(),
                    a.ports.iter().map(|p| p.service_port).collect(),
                );
            }
            out.push(v);
        }
    }
    json!({ "tasks": out })
}

fn port_mapping(p: &super::FakePort, host_port: bool) -> Value {
    let mut m = Map::new();
    m.insert("containerPort".into(), p.container_port.into());
    if host_port {
        m.insert("hostPort".into(), 0.into());
    }
    m.insert("servicePort".into(), p.service_port.into());
    m.insert("protocol".into(), "tcp".into());
    if let Some(n) = &p.name {
        m.insert("name".into(), n.clone().into());
    }
    m.insert("labels".into(), json!(p.labels));
    Value::Object(m)
}

fn port_definitions(a: &FakeApp) -> Value {
    a.ports
        .iter()
        .map(|p| {
            let mut d = Map::new();
            d.insert("port".into(), p.service_port.into());
            d.insert("protocol".into(), "tcp".into());
            if let Some(n) = &p.name {
                d.insert("name".into(), n.clone().into());
            }
            d.insert("labels".into(), json!(p.labels));
            Value::Object(d)
        })
        .collect()
}

/// One app, with its tasks if asked.
pub(super) fn app(a: &FakeApp, shape: Shape, with_tasks: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    put("id", a.id.clone().into());
    put("cmd", "./serve --port $PORT0".into());
    put("args", Value::Null);
    put("user", Value::Null);
    put("env", json!({}));
    put("instances", a.tasks.len().into());
    put("cpus", json!(0.1));
    put("mem", json!(64.0));
    put("disk", json!(0.0));
    put("executor", "".into());
    put("constraints", json!([]));
    put("uris", json!([]));
    put("storeUrls", json!([]));
    put("backoffSeconds", 1.into());
    put("backoffFactor", json!(1.15));
    put("maxLaunchDelaySeconds", 3600.into());
    put("requirePorts", false.into());
    put("dependencies", json!([]));
    put("labels", json!(a.labels));
    put(
        "upgradeStrategy",
        json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 1}),
    );
    put(
        "healthChecks",
        (0..a.health_checks)
            .map(|i| {
                json!({"path": "/health", "protocol": "HTTP", "portIndex": i.min(a.ports.len().saturating_sub(1)),
                       "gracePeriodSeconds": 15, "intervalSeconds": 3, "timeoutSeconds": 15,
                       "maxConsecutiveFailures": 3})
            })
            .collect(),
    );
    let docker = json!({"image": "example/service:1", "forcePullImage": false, "privileged": false, "parameters": []});
    match (shape, a.networking) {
        (Shape::Modern, net) => {
            match net {
                FakeNetworking::Host => {
                    put("container", Value::Null);
                    put("portDefinitions", port_definitions(a));
                    put("networks", json!([{"mode": "host"}]));
                }
                FakeNetworking::Bridge | FakeNetworking::Container => {
                    let bridge = net == FakeNetworking::Bridge;
                    put(
                        "container",
                        json!({"type": "DOCKER", "docker": docker, "volumes": [],
                               "portMappings": a.ports.iter().map(|p| port_mapping(p, bridge)).collect::<Vec<_>>()}),
                    );
                    put(
                        "networks",
                        if bridge {
                            json!([{"mode": "container/bridge"}])
                        } else {
                            json!([{"mode": "container", "name": "dcos"}])
                        },
                    );
                }
            }
            put("gpus", 0.into());
            put("killSelection", "YOUNGEST_FIRST".into());
            put(
                "unreachableStrategy",
                json!({"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600}),
            );
        }
        (Shape::Legacy, net) => {
            put("ports", a.ports.iter().map(|p| p.service_port).collect());
            if net == FakeNetworking::Host {
                put("portDefinitions", port_definitions(a));
            }
            let (network, container) = match net {
                FakeNetworking::Host => ("HOST", false),
                FakeNetworking::Bridge => ("BRIDGE", true),
                FakeNetworking::Container => ("USER", true),
            };
            if container {
                let mut d = docker.clone();
                if let Value::Object(dm) = &mut d {
                    dm.insert("network".into(), network.into());
                    dm.insert(
                        "portMappings".into(),
                        a.ports
                            .iter()
                            .map(|p| port_mapping(p, net == FakeNetworking::Bridge))
                            .collect(),
                    );
                }
                put(
                    "container",
                    json!({"type": "DOCKER", "docker": d, "volumes": []}),
                );
            } else {
                put("container", Value::Null);
            }
            put(
                "ipAddress",
                if net == FakeNetworking::Container {
                    json!({"networkName": "dcos", "groups": [], "labels": {}})
                } else {
                    Value::Null
                },
            );
        }
    }
    let running = a
        .tasks
        .values()
        .filter(|t| t.state == "TASK_RUNNING")
        .count();
    let healthy = if a.health_checks == 0 {
        0
    } else {
        a.tasks
            .values()
            .filter(|t| {
                t.state == "TASK_RUNNING" && !t.health.is_empty() && t.health.iter().all(|h| h.0)
            })
            .count()
    };
    let unhealthy = if a.health_checks == 0 {
        0
    } else {
        a.tasks
            .values()
            .filter(|t| t.health.iter().any(|h| !h.0))
            .count()
    };
    put(
        "tasksStaged",
        a.tasks
            .values()
            .filter(|t| t.state == "TASK_STAGING")
            .count()
            .into(),
    );
    put("tasksRunning", running.into());
    put("tasksHealthy", healthy.into());
    put("tasksUnhealthy", unhealthy.into());
    put("deployments", json!([]));
    put("version", a.version.clone().into());
    put(
        "versionInfo",
        json!({"lastScalingAt": a.version, "lastConfigChangeAt": a.version}),
    );
    if with_tasks {
        put(
            "tasks",
            a.tasks.values().map(|t| task(a, t, shape)).collect(),
        );
    }
    Value::Object(m)
}

/// One task.
pub(super) fn task(a: &FakeApp, t: &FakeTask, shape: Shape) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    put("id", t.id.clone().into());
    put("appId", a.id.clone().into());
    put("host", t.host.clone().into());
    put("ports", json!(t.ports));
    if let Some(ip) = &t.ip {
        put(
            "ipAddresses",
            json!([{"ipAddress": ip, "protocol": "IPv4"}]),
        );
    }
    put("stagedAt", timestamp(1).into());
    let started = t.state != "TASK_STAGING";
    put(
        "startedAt",
        if started {
            timestamp(2).into()
        } else {
            Value::Null
        },
    );
    put("version", a.version.clone().into());
    put("slaveId", agent_id(&t.host).into());
    if shape == Shape::Modern {
        put("state", t.state.clone().into());
    }
    if a.health_checks > 0 && !t.health.is_empty() {
        put(
            "healthCheckResults",
            t.health
                .iter()
                .map(|(alive, failures)| {
                    json!({
                        "alive": alive,
                        "consecutiveFailures": failures,
                        "firstSuccess": timestamp(3),
                        "lastFailure": if *alive { Value::Null } else { timestamp(5).into() },
                        "lastSuccess": timestamp(4),
                        "taskId": t.id,
                    })
                })
                .collect(),
        );
    }
    Value::Object(m)
}
