//! The `consent-server` binary: `consent-server --listen 127.0.0.1:8080 --database sqlite://consent.db`.
//!
//! It prints the address it listens on as its first line on stdout (so `--listen 127.0.0.1:0`
//! can be used by tests), logs to stderr, and stops gracefully on Ctrl-C or SIGTERM. With
//! `--tls-self-signed` the second line is the certificate's SHA-256 fingerprint
//! (`sha256 Fingerprint=AB:CD:…`, as openssl prints it).

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
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://consent.db",
        global = true
    )]
    database: String,
    /// JSON file with link keys, API keys and datastreams; without it, link keys are ephemeral.
    #[arg(long, env = "CONSENT_KEYS")]
    keys: Option<PathBuf>,
    /// Organisation for Edge requests whose datastream is not in the keys file [default:
    /// consent@AdobeOrg]. Giving it serves unknown datastreams (see
    /// --allow-unknown-datastreams).
    #[arg(long, env = "CONSENT_DEFAULT_ORG")]
    default_org: Option<String>,
    /// Sandbox for Edge requests whose datastream is not in the keys file [default: prod].
    /// Giving it serves unknown datastreams (see --allow-unknown-datastreams).
    #[arg(long, env = "CONSENT_DEFAULT_SANDBOX")]
    default_sandbox: Option<String>,
    /// Serve Edge requests whose datastream (configId) is not in the keys file with the default
    /// organisation and sandbox (logged once); without it (or --default-org/--default-sandbox)
    /// they are refused with EXEG-0003-400.
    #[arg(long, env = "CONSENT_ALLOW_UNKNOWN_DATASTREAMS")]
    allow_unknown_datastreams: bool,
    /// Origin allowed to call the Edge endpoints from a browser (CORS, with credentials) for
    /// datastreams that are not in the keys file, exactly as browsers send it:
    /// scheme://host[:port] (repeat, or separate with commas). Datastreams in the keys file
    /// list their own `origins`.
    #[arg(
        long = "cors-origin",
        env = "CONSENT_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// The region id of the `x-adobe-edge: <cluster>;<region>` answer header.
    #[arg(long, env = "CONSENT_EDGE_REGION", default_value_t = 9)]
    edge_region: u16,
    /// The SameSite attribute (none, lax or strict) the Edge answers ask the Web SDK to give the
    /// cookies it writes (`attrs` of the `state:store` handles; none makes them Secure too).
    /// Without it: no attribute, the client's default.
    #[arg(long, env = "CONSENT_COOKIE_SAME_SITE")]
    cookie_same_site: Option<consent_server::SameSite>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(
        long,
        env = "CONSENT_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CONSENT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate made at start for localhost, 127.0.0.1 and every
    /// --tls-name (for local use); its SHA-256 fingerprint is logged and printed on stdout after
    /// the address.
    #[arg(long, env = "CONSENT_TLS_SELF_SIGNED")]
    tls_self_signed: bool,
    /// A further DNS name or IP address of the self-signed certificate (repeat, or separate
    /// with commas).
    #[arg(
        long = "tls-name",
        env = "CONSENT_TLS_NAMES",
        value_delimiter = ',',
        requires = "tls_self_signed"
    )]
    tls_names: Vec<String>,
    /// Write the self-signed certificate (PEM) to this file, for a browser or client to trust.
    #[arg(
        long,
        env = "CONSENT_TLS_SELF_SIGNED_OUT",
        requires = "tls_self_signed"
    )]
    tls_self_signed_out: Option<PathBuf>,
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
    /// Seconds a connection may take to send a request's headers (also the keep-alive idle
    /// timeout); then it is closed.
    #[arg(long, env = "CONSENT_HEADER_READ_TIMEOUT", default_value_t = 10)]
    header_read_timeout: u64,
    /// Connections served at once; further ones wait in the listen backlog. Keep it well below
    /// the open-file limit (`ulimit -n`).
    #[arg(long, env = "CONSENT_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Requests per second per API key on the authenticated endpoints, burst twice that (0: no
    /// limit).
    #[arg(long, env = "CONSENT_API_RATE_LIMIT", default_value_t = 1_000)]
    api_rate_limit: u32,
    /// Failed authentications per minute per client on the authenticated endpoints, after a
    /// burst of as many; over it the client gets 429 there (0: no limit).
    #[arg(long, env = "CONSENT_AUTH_FAILURE_LIMIT", default_value_t = 10)]
    auth_failure_limit: u32,
    /// Every `set-consent` and preference-update answer carries a signed receipt, not only those
    /// asked for with the `consent-receipt: true` header (about 28 µs of CPU per change).
    #[arg(long, env = "CONSENT_RECEIPTS_ALWAYS")]
    receipts_always: bool,
    /// The jurisdiction receipts name (Kantara's `jurisdiction`), e.g. `EU`.
    #[arg(long, env = "CONSENT_RECEIPT_JURISDICTION")]
    receipt_jurisdiction: Option<String>,
    /// The privacy policy receipts name (Kantara's `policyUrl`).
    #[arg(long, env = "CONSENT_RECEIPT_POLICY_URL")]
    receipt_policy_url: Option<String>,
    /// Without a command, the server runs.
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the binary does besides serving: the data-subject rights on the database directly, for
/// operators (the admin API does the same over HTTP).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Erases everything personal stored about one identity (GDPR Art. 17) and records the
    /// erasure; prints what was removed as JSON.
    Erase(Person),
    /// Prints everything stored about one identity as one JSON document (GDPR Art. 15).
    Export(Person),
    /// Verifies a signed consent receipt (or a chain checkpoint) offline, against the published
    /// receipt keys (`GET /.well-known/consent-receipt-keys`, saved to a file); prints its
    /// claims as JSON when the signature holds.
    VerifyReceipt {
        /// The JWKS file.
        #[arg(long)]
        keys: PathBuf,
        /// The receipt (compact JWS); `-` or nothing reads it from stdin.
        receipt: Option<String>,
    },
}

/// Verifies a receipt or checkpoint (told apart by the header's `typ`) against a JWKS file.
fn verify_receipt(keys: &std::path::Path, receipt: Option<String>) -> anyhow::Result<()> {
    use consent_core::receipt::{self, CHECKPOINT_TYP, Checkpoint, Jwks, ReceiptClaims};
    let text =
        std::fs::read_to_string(keys).with_context(|| format!("reading {}", keys.display()))?;
    let jwks =
        Jwks::from_json(&text).with_context(|| format!("{} is not a JWKS", keys.display()))?;
    let token = match receipt.filter(|r| r != "-") {
        Some(token) => token,
        None => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)
                .context("reading the receipt from stdin")?;
            token
        }
    };
    let token = token.trim();
    let header = receipt::decode(token).context("not a receipt")?.header;
    let claims = if header.typ.as_deref() == Some(CHECKPOINT_TYP) {
        serde_json::to_value(receipt::verify_with::<Checkpoint>(
            token,
            &jwks,
            consent_server::verify_ed25519,
        )?)?
    } else {
        serde_json::to_value(receipt::verify_with::<ReceiptClaims>(
            token,
            &jwks,
            consent_server::verify_ed25519,
        )?)?
    };
    #[allow(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{claims:#}");
    }
    Ok(())
}

/// One identity of one organisation and sandbox.
#[derive(Debug, clap::Args)]
struct Person {
    /// The organisation, e.g. `ORG@AdobeOrg`.
    #[arg(long)]
    org: String,
    /// The sandbox.
    #[arg(long, default_value = "prod")]
    sandbox: String,
    /// The identity namespace, e.g. `ECID`, `Email` or `CRMID`.
    namespace: String,
    /// The identity.
    id: String,
}

/// Runs a data-subject command against the database; the exit status says whether anything was
/// stored about the person (1 when nothing was).
async fn run_command(database: &str, command: Command) -> anyhow::Result<()> {
    let (person, erase) = match command {
        Command::VerifyReceipt { keys, receipt } => return verify_receipt(&keys, receipt),
        Command::Erase(person) => (person, true),
        Command::Export(person) => (person, false),
    };
    let key = consent_server::ProfileKey {
        org: person.org,
        sandbox: person.sandbox,
        namespace: person.namespace,
        id: person.id,
    };
    let db = consent_server::Db::open(database)
        .await
        .with_context(|| format!("opening {database}"))?;
    let outcome = if erase {
        db.erase(&key)
            .await
            .map(|erased| erased.map(|e| e.to_json()))
    } else {
        db.export(&key).await
    };
    db.close().await;
    match outcome? {
        Some(document) => {
            #[allow(clippy::print_stdout, reason = "the command's output")]
            {
                println!("{document:#}");
            }
            Ok(())
        }
        None => anyhow::bail!(
            "nothing is stored about {} {} in {}/{}",
            key.namespace,
            key.id,
            key.org,
            key.sandbox
        ),
    }
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
    if let Some(command) = args.command {
        return run_command(&args.database, command).await;
    }
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
    config.allow_unknown_datastreams = args.allow_unknown_datastreams
        || args.default_org.is_some()
        || args.default_sandbox.is_some();
    if let Some(org) = args.default_org {
        config.default_org = org;
    }
    if let Some(sandbox) = args.default_sandbox {
        config.default_sandbox = sandbox;
    }
    config.cors_origins = args.cors_origins;
    config.edge_region = args.edge_region;
    config.cookie_same_site = args.cookie_same_site;
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(consent_server::TlsConfig::from_pem_files(cert, key)?),
        _ if args.tls_self_signed => {
            let tls = consent_server::TlsConfig::self_signed(&args.tls_names)?;
            if let Some(out) = &args.tls_self_signed_out {
                tls.write_certificate(out)?;
            }
            Some(tls)
        }
        _ => None,
    };
    config.public_url = args.public_url;
    config.rate_limit_per_sec = args.rate_limit;
    config.trusted_proxies = args.trusted_proxies;
    config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    config.header_read_timeout = Duration::from_secs(args.header_read_timeout.max(1));
    config.max_connections = args.max_connections.max(1);
    config.api_rate_limit_per_sec = args.api_rate_limit;
    config.auth_failures_per_minute = args.auth_failure_limit;
    config.receipts_always = args.receipts_always;
    config.receipt_policy =
        consent_server::ReceiptPolicy::new(args.receipt_jurisdiction, args.receipt_policy_url);
    // Registered before the address is printed: a signal sent as soon as the address is known
    // already stops the server gracefully instead of killing it.
    let shutdown = shutdown_signals()?;
    let tls = config.tls.clone();
    let server = consent_server::serve(config).await?;
    {
        #[allow(
            clippy::print_stdout,
            reason = "the first stdout line is the listen address, by contract"
        )]
        {
            println!("{}", server.local_addr());
            // Then, for a self-signed certificate, its fingerprint as openssl prints it.
            if args.tls_self_signed
                && let Some(tls) = &tls
            {
                println!("sha256 Fingerprint={}", tls.fingerprint());
            }
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
