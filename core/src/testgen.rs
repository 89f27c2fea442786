//! Random catalog changes for property tests (test builds only): a small
//! name space, so that changes collide (the same endpoint moved between
//! services, aliases claimed twice or equal to hostnames, duplicates across
//! sources, mass removals the guard holds).

use std::time::{Duration, SystemTime};

use crate::catalog::{CatalogState, GuardSettings};
use crate::model::{
    Endpoint, EndpointPort, Health, Hostname, Labels, Locality, Protocol, Provenance, Service,
    ServicePort, SourceId,
};
use crate::registry::{Change, SourceStatus, SourceView, SourcedChange};

/// xorshift64*: deterministic, dependency-free.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

pub(crate) const HOSTS: [&str; 6] = ["a", "b", "c", "d.x", "e.x", "f"];
pub(crate) const SOURCES: [&str; 2] = ["one", "two"];

fn host(s: impl AsRef<str>) -> Hostname {
    // Only called with the valid names above.
    Hostname::new(s.as_ref()).unwrap_or_else(|e| panic!("{e}"))
}

/// Two sources; `two` has the mass-deregistration guard on.
pub(crate) fn state() -> CatalogState {
    CatalogState::new(SOURCES.map(SourceId::new)).with_guard(
        &SourceId::new("two"),
        GuardSettings {
            max_removal_share: 0.5,
            grace: Duration::from_secs(30),
        },
    )
}

pub(crate) fn service(rng: &mut Rng) -> Service {
    let name = *rng.pick(&HOSTS);
    let mut aliases = Vec::new();
    if rng.chance(30) {
        aliases.push(host(rng.pick(&["g", "h", "a", "alias.x"])));
    }
    let mut ports = vec![ServicePort {
        name: "http".into(),
        number: *rng.pick(&[80, 81]),
        protocol: Protocol::Http,
    }];
    if rng.chance(30) {
        ports.push(ServicePort {
            name: "grpc".into(),
            number: 90,
            protocol: Protocol::Grpc,
        });
    }
    Service {
        hostname: host(name),
        aliases,
        ports,
    }
}

pub(crate) fn endpoint(rng: &mut Rng, source: &str) -> Endpoint {
    let id = rng.below(10);
    let version = *rng.pick(&["v1", "v2"]);
    let labels = Labels::from([("version".to_string(), version.to_string())]);
    let mut ports = vec![EndpointPort {
        name: String::new(),
        number: *rng.pick(&[80, 8080]),
    }];
    if rng.chance(20) {
        ports.push(EndpointPort {
            name: "grpc".into(),
            number: 90,
        });
    }
    Endpoint {
        service: host(rng.pick(&HOSTS)),
        address: format!("10.0.0.{}", rng.below(6)),
        ports,
        labels: labels.clone(),
        health: *rng.pick(&[
            Health::Healthy,
            Health::Healthy,
            Health::Draining,
            Health::Unhealthy,
        ]),
        weight: 1 + rng.below(2) as u32,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new(source),
            native_id: format!("ep-{id}"),
            raw_labels: labels,
        },
    }
}

/// One random change to one source.
pub(crate) fn change(rng: &mut Rng, now: SystemTime) -> SourcedChange {
    let source = *rng.pick(&SOURCES);
    let change = match rng.below(10) {
        0 => Change::Reset(SourceView {
            services: (0..rng.below(4)).map(|_| service(rng)).collect(),
            endpoints: (0..rng.below(8)).map(|_| endpoint(rng, source)).collect(),
        }),
        1 | 2 => Change::UpsertService(service(rng)),
        3 => Change::RemoveService(host(rng.pick(&HOSTS))),
        4..=6 => Change::UpsertEndpoint(endpoint(rng, source)),
        7 | 8 => Change::RemoveEndpoint(crate::model::EndpointKey {
            source: SourceId::new(source),
            native_id: format!("ep-{}", rng.below(10)).into(),
        }),
        _ => Change::Status(SourceStatus::Error {
            message: "unreachable".into(),
        }),
    };
    SourcedChange {
        source: SourceId::new(source),
        change,
        at: now,
    }
}
