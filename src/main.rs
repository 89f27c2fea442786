//! `anymesh`: parse the command line, set up logging, run the command.

use std::path::PathBuf;
use std::process::ExitCode;

use anymesh::settings::Settings;
use anymesh::{demo, inspect, mesh};
use clap::{Parser, Subcommand, ValueEnum};

/// Exit status for a bad command line or configuration.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "anymesh",
    version,
    about = "A platform-agnostic service mesh proxy"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "ANYMESH_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info,anymesh_proxy=debug`.
    #[arg(long, global = true, env = "ANYMESH_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    anymesh_core::config::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mesh: registries, routing config, outbound and admin listeners.
    Proxy {
        #[arg(short, long, default_value = "anymesh.yaml")]
        config: PathBuf,
        /// Threads serving traffic (default: one per CPU), each with its own single-threaded
        /// runtime, connections and upstream pool; registries, routing and admin run on one
        /// more thread of their own.
        #[arg(long, env = "ANYMESH_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Validate anymesh.yaml, the registries' current content and the routing files, without starting.
    ///
    /// Lists each etcd registry once (exit 69 when one is unreachable); exit 64 on any other error.
    Check {
        #[arg(short, long, default_value = "anymesh.yaml")]
        config: PathBuf,
        /// Do not contact live registries (etcd): validate their settings only.
        #[arg(long)]
        offline: bool,
        /// How long to wait for each live registry's list (Go duration, e.g. `10s`).
        #[arg(long, default_value = "10s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Dry run: which route a request takes, the split, the subset and the endpoints.
    Routes {
        #[arg(short, long, default_value = "anymesh.yaml")]
        config: PathBuf,
        /// Host (authority) of the request, e.g. `reviews` or `reviews:9080`.
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// A request header `name=value`; repeatable.
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
    },
    /// Every endpoint of a service: its source, labels before and after mapping, health, and why it is or is not eligible.
    Explain {
        #[arg(short, long, default_value = "anymesh.yaml")]
        config: PathBuf,
        /// The service's hostname or alias, optionally with `:port`.
        #[arg(long)]
        host: String,
        /// Print JSON (the shape the admin listener's `/explain` serves).
        #[arg(long)]
        json: bool,
        /// Ask the running proxy (its admin listener, anymesh.yaml `admin`)
        /// for the live view: each endpoint's health verdicts, each cluster's counters.
        #[arg(long)]
        live: bool,
    },
    /// The built-in certificate authority: init, token, serve, rotate, activate, retire, bundle.
    Ca(anymesh::ca::CaArgs),
    /// Start demo upstreams and the mesh on loopback, show a 95/5 split and header routing, keep serving.
    Demo {
        /// Requests to send for the split measurement.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Exit after printing the results instead of serving until Ctrl-C.
        #[arg(long)]
        no_wait: bool,
    },
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own results; only problems are logged unless asked for.
    let demo_default = matches!(cli.command, Command::Demo { .. }) && cli.log == "info";
    init_tracing(cli.log_format, if demo_default { "warn" } else { &cli.log });
    // `proxy` runs single-threaded runtimes: this thread's for the control
    // plane, one per listener thread; the other commands use a work-stealing
    // runtime.
    let rt = match &cli.command {
        Command::Proxy { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("anymesh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Proxy { config, workers } => {
                let threads = workers.map(usize::from).unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                });
                run_proxy(config, threads).await
            }
            Command::Check {
                config,
                offline,
                timeout,
            } => {
                let live = if offline {
                    inspect::Live::Skip
                } else {
                    inspect::Live::Contact(timeout)
                };
                inspect::check(&config, live).await
            }
            Command::Routes {
                config,
                host,
                path,
                method,
                headers,
            } => inspect::routes(&config, &host, &path, &method, &headers).await,
            Command::Explain {
                config,
                host,
                json,
                live,
            } => anymesh::explain::run(&config, &host, json, live).await,
            Command::Demo { requests, no_wait } => demo::run(requests, !no_wait).await,
            Command::Ca(args) => anymesh::ca::run(args).await,
        }
    })
}

async fn run_proxy(config: PathBuf, threads: usize) -> ExitCode {
    let mut settings = match Settings::load(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anymesh: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    settings.listeners.threads = threads;
    let mesh = match mesh::Mesh::start(settings).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("anymesh: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    mesh::wait_for_signal().await;
    tracing::info!("shutting down: draining connections");
    mesh.shutdown().await;
    ExitCode::SUCCESS
}
