//! `anymesh explain`: every endpoint of one service, where it came from, its
//! labels and why it is or is not eligible in each of the service's clusters.
//!
//! Loads like `anymesh routes` (registries read once, etcd not contacted) and
//! prints [`anymesh_core::explain`]'s text or JSON. The admin listener's
//! `GET /explain?host=` serves the same JSON from the live catalog.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anymesh_core::explain::{explain as explain_host, ExplainError};

use crate::inspect;

const EXIT_CONFIG: u8 = 64;
/// The configuration loaded but has no such service.
const EXIT_NOT_FOUND: u8 = 1;

/// `anymesh explain -c anymesh.yaml --host H [--json]`.
pub async fn run(config: &Path, host: &str, json: bool) -> ExitCode {
    let loaded = match inspect::load(config, inspect::Live::Skip).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("anymesh: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    for s in loaded.snapshot.sources.iter().filter(|s| !s.synced) {
        eprintln!(
            "note: registry {} is not read by `anymesh explain`; \
             GET /explain?host={host} on the admin listener shows the live view",
            s.source
        );
    }
    let x = match explain_host(&loaded.snapshot, &loaded.table, host) {
        Ok(x) => x,
        Err(e @ ExplainError::InvalidHost { .. }) => {
            eprintln!("anymesh: --host: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e @ ExplainError::NoService { .. }) => {
            eprintln!("anymesh: {e}");
            return ExitCode::from(EXIT_NOT_FOUND);
        }
    };
    if json {
        match serde_json::to_string_pretty(&x) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("anymesh: cannot encode the explanation: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", x.render(SystemTime::now()));
    }
    ExitCode::SUCCESS
}
