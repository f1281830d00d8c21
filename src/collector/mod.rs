//! surveyd-collector, the vendor's side: receives reports over HTTP(S),
//! validates them, and keeps one row per installation in SQLite or
//! PostgreSQL. This file owns the command line and the exit codes
//! (sysexits); each concern lives in its own module:
//!
//! - [`config`]: the TOML configuration and its checks
//! - [`ingest`]: payload validation, identifier hashing, `flags`, `uid`
//! - [`http`], [`ratelimit`]: the listener and the request handler
//! - [`limits`]: connection caps and the memory budget for request bodies
//! - [`store`]: schema, migrations, the batching writer, the reads
//! - [`receipt_key`]: the Ed25519 key that signs every receipt
//! - [`report`]: the `report` and `stats` outputs
//! - [`service`]: the systemd service loop

pub mod config;
pub mod dashboard;
pub mod history;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod ratelimit;
pub mod receipt_key;
pub mod report;
pub mod service;
pub mod store;
pub mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit;
use crate::sys::{self, Failure, Runtime};

use config::{Config, Database, DEFAULT_CONFIG_PATH};
use report::Format;
use store::{Access, Store};
use summary::{Range, SummarySource};

#[derive(Parser)]
#[command(
    name = "surveyd-collector",
    version,
    about = "Receives surveyd and kopano-server usage reports and keeps one row per installation",
    long_about = "surveyd-collector is the vendor's side of surveyd: it accepts usage reports \
on POST /api/stats/v1/submit from surveyd (identifiers already hashed on the sending machine) \
and from kopano-server's built-in survey client (raw identifiers, hashed with SHA-256 on \
ingest and stored nowhere raw), validates them, and keeps one row per installation in the \
embedded SQLite database or in PostgreSQL.",
    after_help = "Exit status follows sysexits.h: 0 success, 64 usage error, 69 the database \
is unavailable, 70 internal error, 71 operating-system error, 73 a file cannot be created, 78 configuration error.\n\n\
See surveyd-collector(8) and surveyd(8)."
)]
pub struct Cli {
    /// Configuration file (TOML)
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector service
    Serve,
    /// Validate the configuration and print the effective settings
    CheckConfig,
    /// Print the installation table
    ///
    /// One row per installation, with the columns of the table: uid,
    /// hashed ids, first_seen, last_update, the counts and facts, flags.
    Report {
        /// Output format: a MySQL-style box, CSV with a header line, or a
        /// JSON array of row objects
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print installations seen per period, by version and OS, and active users
    Stats,
    /// Print the public key that signs receipts, and its key id
    ///
    /// The public key (`ed25519:` and 64 hex digits) is what surveyd
    /// installations configure as `surveyclient_collector_key` to check
    /// the receipts this collector answers with. The key file is
    /// `receipt_key` in the configuration; `serve` creates it on first
    /// start. Without --generate a missing key is an error (exit 78).
    Key {
        /// Create the key first (before the first start, for provisioning);
        /// an existing key is never overwritten
        #[arg(long)]
        generate: bool,
        /// The key file, instead of the configuration's `receipt_key`
        /// (e.g. a new key being prepared for a rotation)
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Print {"public_key": .., "key_id": .., "file": ..} as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the publishable summary as JSON
    ///
    /// The document GET /api/stats/v1/summary.json serves (docs/summary.md):
    /// daily series from the history, every group of fewer than min_group
    /// installations folded into "other", no minimum or maximum of anything.
    Export {
        /// Days covered, ending today (UTC)
        #[arg(long, value_enum, default_value_t)]
        range: Range,
        /// Fold groups of fewer installations than this into "other"
        /// [default: min_group from the configuration, 10 unless set]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        min_group: Option<u64>,
    },
}

/// The whole program; `src/bin/surveyd-collector.rs` only calls this.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Serve => {
            // The service reports through its log (journald under systemd).
            crate::logging::init("surveyd-collector", "RUST_LOG");
            // Before the runtime starts its threads, which would each get
            // an arena of their own.
            limits::limit_heap_arenas();
            return sys::end_service(
                Runtime::multi_thread().and_then(|rt| rt.block_on(service::serve(&cli.config))),
            );
        }
        Command::CheckConfig => check_config(&cli.config),
        Command::Report { format } => read_database(&cli.config, |store| async move {
            let rows = store.rows().await?;
            print!("{}", report::render(&rows, format));
            Ok(())
        }),
        Command::Stats => read_database(&cli.config, |store| async move {
            let stats = store.stats(store::unix_now()).await?;
            print!("{}", report::stats(&stats));
            Ok(())
        }),
        Command::Key {
            generate,
            file,
            json,
        } => key(&cli.config, generate, file, json),
        Command::Export { range, min_group } => export(&cli.config, range, min_group),
    };
    sys::end_command("surveyd-collector", result)
}

fn key(config: &Path, generate: bool, file: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let path = match file {
        Some(path) => path,
        None => {
            Config::load(config)
                .map_err(|e| Failure::new(exit::CONFIG, e))?
                .receipt_key
        }
    };
    let key = if generate {
        receipt_key::generate(&path)
    } else {
        receipt_key::load(&path)
    }
    .map_err(|e| Failure::new(e.exit_code(), e))?;
    let public = key.public();
    if json {
        let shown = serde_json::json!({
            "public_key": public.to_string(),
            "key_id": public.key_id(),
            "file": path.display().to_string(),
        });
        println!("{shown}");
    } else {
        println!("{public}");
        println!("key id {} ({})", public.key_id(), path.display());
    }
    Ok(())
}

fn export(path: &Path, range: Range, min_group: Option<u64>) -> Result<(), Failure> {
    let config = Config::load(path).map_err(|e| Failure::new(exit::CONFIG, e))?;
    let min_group = min_group.unwrap_or(config.min_group);
    read_database(path, |store| async move {
        let (from, to) = range.days(summary::day_of(store::unix_now()));
        let summary = store.load_summary(from, to).await?;
        let json = serde_json::to_string_pretty(&summary.publishable(min_group))
            .expect("the published summary serialises");
        println!("{json}");
        Ok(())
    })
}

fn check_config(path: &Path) -> Result<(), Failure> {
    let config = Config::load(path).map_err(|e| Failure::new(exit::CONFIG, e))?;
    for warning in warnings(&config) {
        eprintln!("surveyd-collector: warning: {}: {warning}", path.display());
    }
    print!("{}", config.effective_toml());
    Ok(())
}

/// Settings that are valid but probably not what the vendor wants.
fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(addr) = config.listen_addr() {
        if !addr.ip().is_loopback() && config.tls.is_none() {
            out.push(format!(
                "listen = {:?} is reachable from other hosts but [tls] is not set; \
                 reports would travel in clear text unless a TLS proxy is in front",
                config.listen
            ));
        }
    }
    if let Database::Sqlite(p) = config.database() {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                out.push(format!(
                    "database directory {} does not exist yet \
                     (the unit's StateDirectory= creates it)",
                    dir.display()
                ));
            }
        }
    }
    if let Some(dir) = config
        .receipt_key
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        if !dir.is_dir() {
            out.push(format!(
                "receipt_key directory {} does not exist yet \
                 (`serve` creates it with the key on first start)",
                dir.display()
            ));
        }
    }
    if !config.rate_limit.enabled {
        out.push("rate_limit is disabled: any source may send without limit".into());
    }
    out
}

fn read_database<F, Fut>(path: &Path, run: F) -> Result<(), Failure>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<(), store::StoreError>>,
{
    let config = Config::load(path).map_err(|e| Failure::new(exit::CONFIG, e))?;
    Runtime::current_thread()?.block_on(async {
        let store = Store::open(&config.database(), Access::Read)
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, e))?;
        run(store)
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, e))
    })
}
