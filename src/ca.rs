//! `anymesh ca`: the built-in certificate authority's commands (make it,
//! mint join tokens, serve, rotate its root). The CA itself is
//! `anymesh_identity::ca`; its module docs describe the state directory,
//! the HTTPS API and the rotation procedure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anymesh_identity::ca::{CaDir, CaError, CaServer, Intermediate, ServeOptions};
use anymesh_identity::SpiffeId;
use clap::{Args, Subcommand};

/// Exit status for a bad command line or state.
const EXIT_USAGE: u8 = 64;

fn parse_duration(s: &str) -> Result<Duration, String> {
    anymesh_core::config::parse_duration(s).map_err(|e| e.to_string())
}

/// `anymesh ca …`.
#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Args)]
struct IntermediateArgs {
    /// An intermediate CA certificate signed by your root (PEM; the
    /// intermediate first, then any certificates between it and the root).
    #[arg(long, requires_all = ["key", "root"])]
    cert: Option<PathBuf>,
    /// The intermediate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Your root certificate(s) (PEM): the trust bundle proxies get.
    #[arg(long, requires = "cert")]
    root: Option<PathBuf>,
}

impl IntermediateArgs {
    fn get(&self) -> Option<Intermediate> {
        match (&self.cert, &self.key, &self.root) {
            (Some(cert), Some(key), Some(root)) => Some(Intermediate {
                cert: cert.clone(),
                key: key.clone(),
                root: root.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Make a new CA in a state directory: a self-signed ECDSA P-256 root,
    /// or an intermediate signed by your root (--cert, --key, --root).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = anymesh_identity::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        #[command(flatten)]
        intermediate: IntermediateArgs,
    },
    /// Mint a one-time join token bound to one identity; printed once on stdout.
    Token {
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE ID, e.g. `spiffe://cluster.local/ns/shop/sa/reviews`.
        #[arg(long)]
        identity: String,
        /// How long the token can be used (Go duration).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Serve the CA over HTTPS (join, renew, bundle) until Ctrl-C.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0:15012")]
        listen: SocketAddr,
        /// A host name or IP address proxies reach the CA by (its server
        /// certificate's names); repeatable.
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Lifetime of the certificates it signs (Go duration).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        leaf_ttl: Duration,
    },
    /// Start a root rotation: the new root joins the bundle now and signs
    /// from the end of the overlap (or `activate`).
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        /// How long both roots are in the bundle before the new one signs;
        /// longer than 0.6 × the leaf lifetime.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        overlap: Duration,
        #[command(flatten)]
        intermediate: IntermediateArgs,
    },
    /// End the overlap of a rotation now: the new root signs from now on.
    Activate {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Drop the old root from the bundle (after every leaf it signed expired).
    Retire {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the trust bundle (PEM): the bootstrap bundle for new proxies.
    Bundle {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs an `anymesh ca` command.
pub async fn run(args: CaArgs) -> ExitCode {
    match execute(args.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anymesh ca: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn execute(command: CaCommand) -> Result<(), CaError> {
    match command {
        CaCommand::Init {
            dir,
            trust_domain,
            intermediate,
        } => {
            let ca = match intermediate.get() {
                Some(given) => CaDir::init_intermediate(&dir, &trust_domain, &given)?,
                None => CaDir::init_root(&dir, &trust_domain)?,
            };
            eprintln!(
                "anymesh ca: CA for trust domain {trust_domain} made in {}; give proxies its bundle (`anymesh ca bundle --dir {}`)",
                ca.path().display(),
                dir.display()
            );
        }
        CaCommand::Token { dir, identity, ttl } => {
            let id = SpiffeId::parse(&identity)
                .map_err(|e| CaError::Invalid(format!("--identity: {e}")))?;
            let token = CaDir::open(&dir)?.mint_token(&id, ttl)?;
            println!("{token}");
            eprintln!(
                "anymesh ca: one-time join token for {id}, valid for {}s; it is not stored and cannot be shown again",
                ttl.as_secs()
            );
        }
        CaCommand::Serve {
            dir,
            listen,
            sans,
            leaf_ttl,
        } => {
            let server = CaServer::start(
                CaDir::open(&dir)?,
                ServeOptions {
                    listen,
                    sans,
                    leaf_ttl,
                },
            )
            .await?;
            crate::mesh::wait_for_signal().await;
            tracing::info!("ca: shutting down");
            server.shutdown().await;
        }
        CaCommand::Rotate {
            dir,
            overlap,
            intermediate,
        } => {
            let rotation = CaDir::open(&dir)?.rotate(overlap, intermediate.get().as_ref())?;
            eprintln!(
                "anymesh ca: rotation started (signer {}): the bundle holds both roots; the new one signs after the {}s overlap (or at `anymesh ca activate`); retire the old one a leaf lifetime after that",
                rotation.generation,
                overlap.as_secs()
            );
        }
        CaCommand::Activate { dir } => {
            let generation = CaDir::open(&dir)?.activate()?;
            eprintln!("anymesh ca: signer {generation} signs from now on");
        }
        CaCommand::Retire { dir } => {
            let dropped = CaDir::open(&dir)?.retire()?;
            eprintln!("anymesh ca: {dropped} old signer(s) retired; their roots left the bundle");
        }
        CaCommand::Bundle { dir } => {
            print!("{}", CaDir::open(&dir)?.bundle_pem()?);
        }
    }
    Ok(())
}
