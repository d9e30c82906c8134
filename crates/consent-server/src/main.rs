//! The `consent-server` binary: `consent-server --listen 127.0.0.1:8080 --database sqlite://consent.db`.
//!
//! It prints the address it listens on as its first line on stdout (so `--listen 127.0.0.1:0`
//! can be used by tests), logs to stderr, and stops gracefully on Ctrl-C or SIGTERM.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// mimalloc instead of glibc's allocator: the request path allocates on every thread and frees
/// on others, where glibc's arenas contend (see docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The consent service.
#[derive(Debug, Parser)]
#[command(name = "consent-server", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "CONSENT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database: sqlite://PATH (or a plain path) or postgres://…
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://consent.db")]
    database: String,
    /// JSON file with link keys, API keys and datastreams; without it, link keys are ephemeral.
    #[arg(long, env = "CONSENT_KEYS")]
    keys: Option<PathBuf>,
    /// Organisation for Edge requests whose datastream is not in the keys file.
    #[arg(long, env = "CONSENT_DEFAULT_ORG", default_value = "consent@AdobeOrg")]
    default_org: String,
    /// Public base URL that unsubscribe links point at.
    #[arg(long, env = "CONSENT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Requests per second per client on the public endpoints (0: no limit).
    #[arg(long, env = "CONSENT_RATE_LIMIT", default_value_t = 50)]
    rate_limit: u32,
    /// Reverse proxy whose X-Forwarded-For is believed for the rate limit (repeat, or separate
    /// with commas); without one, the limit applies to the TCP peer.
    #[arg(
        long = "trusted-proxy",
        env = "CONSENT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Request timeout in seconds.
    #[arg(long, env = "CONSENT_REQUEST_TIMEOUT", default_value_t = 10)]
    request_timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(
            std::env::var("RUST_LOG")
                .ok()
                .and_then(|l| l.parse::<tracing::Level>().ok())
                .unwrap_or(tracing::Level::INFO),
        )
        .init();
    let mut config = consent_server::Config::new(args.listen, args.database)?;
    match &args.keys {
        Some(path) => {
            config.keys = consent_server::Keys::load(path)
                .with_context(|| format!("loading {}", path.display()))?;
        }
        None => tracing::warn!(
            "no --keys file: unsubscribe links are signed with an ephemeral key and die with \
             this process, and the admin API accepts no API key"
        ),
    }
    config.default_org = args.default_org;
    config.public_url = args.public_url;
    config.rate_limit_per_sec = args.rate_limit;
    config.trusted_proxies = args.trusted_proxies;
    config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    // Registered before the address is printed: a signal sent as soon as the address is known
    // already stops the server gracefully instead of killing it.
    let shutdown = shutdown_signals()?;
    let server = consent_server::serve(config).await?;
    {
        #[allow(
            clippy::print_stdout,
            reason = "the first stdout line is the listen address, by contract"
        )]
        {
            println!("{}", server.local_addr());
        }
    }
    let stop = server.stopper();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop.send(true);
    });
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// A future that ends on SIGTERM or Ctrl-C (SIGINT); both are registered when this returns.
#[cfg(unix)]
fn shutdown_signals() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A future that ends on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signals() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
