//! The `aixds` command line: argument parsing and one function per subcommand.

mod explain;
mod validate;

pub use validate::{Loaded, Report, Verdict, condition_line, load};

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "aixds",
    version,
    about = "xDS control plane for Envoy-based AI gateways",
    long_about = "aixds reads Envoy AI Gateway objects (AIGatewayRoute, AIServiceBackend, \
BackendSecurityPolicy, QuotaPolicy), Envoy Gateway Backends and BackendTrafficPolicies (rate limits), Gateway API Gateways, HTTPRoutes, \
BackendTLSPolicies and ReferenceGrants, Inference Extension InferencePools and core Secrets, \
Services, EndpointSlices and Pods, keeps them in a dependency graph and reports what is wrong \
with each object.\n\nStart with `aixds validate examples/`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr. What is logged: the filter in $AIXDS_LOG, else $RUST_LOG (e.g.
    /// `info,aixds::xds=debug`), else `info`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant, reason = "one value, parsed once per process")]
pub enum Command {
    /// Check manifests: print every object's conditions; exit 1 on a problem, 2 if unreadable.
    ///
    /// PATHs are YAML/JSON files or directories (read recursively). Kinds aixds does not read
    /// (Deployments, ConfigMaps, ...) are skipped with one warning each. References may cross
    /// files and namespaces; a reference without a namespace means the referrer's. Give every
    /// file that will be applied together: a reference to an object in none of them fails.
    ///
    /// Exit codes:
    ///   0  every object is Accepted, defined once, and resolves every reference.
    ///   1  a problem in the manifests: an object not Accepted, an unresolved reference
    ///      (ResolvedRefs=False: a missing object, a Secret without its key, ...), an object
    ///      defined differently in two files, an invalid name, or a document that does not
    ///      parse (bad YAML included: it is reported with its file and line like any other).
    ///   2  the input cannot be read: a PATH that does not exist (nothing is checked), or a
    ///      file that cannot be read (permissions, not UTF-8 text; the others are reported).
    #[command(verbatim_doc_comment)]
    Validate {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Print the dependency graph of the objects in PATHs: nodes with their conditions,
    /// placeholders for missing references, and edges labelled with the referencing field.
    ///
    /// Render DOT with `aixds graph examples/ --format dot | dot -Tsvg > graph.svg`.
    Graph {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = GraphFormat::Json)]
        format: GraphFormat,
        /// Only this object's neighbourhood: `Kind/namespace/name` (or `Kind/name`).
        #[arg(long, value_name = "OBJECT", value_parser = parse_key)]
        focus: Option<crate::api::ObjectKey>,
        /// How many references away from --focus to go, both directions.
        #[arg(long, default_value_t = crate::admin::DEFAULT_DEPTH, requires = "focus")]
        depth: usize,
    },
    /// Explain why one object is or is not serving: its conditions, its references and whether
    /// each resolves, what refers to it, and the Envoy resources compiled from it.
    ///
    /// With PATHs, loads and compiles them here. With --admin, asks a running aixds instead,
    /// which also knows whether each Envoy ACKed or rejected those resources.
    Explain {
        /// `Kind/namespace/name` (or `Kind/name`), e.g. `AIGatewayRoute/default/quickstart`.
        #[arg(value_name = "OBJECT", value_parser = parse_key)]
        object: crate::api::ObjectKey,
        #[arg(value_name = "PATH", required_unless_present = "admin")]
        paths: Vec<PathBuf>,
        /// The admin address of a running aixds, e.g. 127.0.0.1:19000.
        #[arg(long, value_name = "ADDRESS", conflicts_with = "paths")]
        admin: Option<String>,
    },
    /// Run the gateway: load and watch manifests, serve xDS, and start Envoy pointed at it.
    ///
    /// Edits to the manifests apply without a restart: only the affected Envoy resources are
    /// recompiled and pushed. Envoy is found via --envoy, $ENVOY_BIN, .venv/bin/envoy (installed
    /// by hack/install.sh) or PATH; its logs appear under the `envoy` target. Stop with Ctrl-C.
    ///
    /// The Envoy started here reaches xDS and the ext_proc over a private Unix socket that only
    /// this user's processes can open; no TCP port is opened for them unless --xds-address is
    /// given (or --no-envoy, which serves 127.0.0.1:18000). A TCP port requires mutual TLS
    /// (--tls-cert, --tls-key, --tls-client-ca) unless --insecure-grpc is given.
    Run {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also serve xDS (ADS, delta and state-of-the-world) and the ext_proc on this TCP
        /// address, for Envoys started elsewhere [default with --no-envoy: 127.0.0.1:18000].
        #[arg(long)]
        xds_address: Option<std::net::SocketAddr>,
        #[command(flatten)]
        tls: ServeTlsArgs,
        /// Address of the admin HTTP server (/healthz, /readyz, /metrics, /debug/graph,
        /// /debug/xds); keep it on loopback unless the network is trusted.
        #[arg(long, default_value = "127.0.0.1:19000")]
        admin_address: std::net::SocketAddr,
        /// Address the Envoy listeners bind to.
        #[arg(long, default_value = "0.0.0.0")]
        listener_address: String,
        /// Listener port when the manifests define no Gateway.
        #[arg(long, default_value_t = 1975)]
        default_port: u16,
        /// Only serve xDS; start no Envoy.
        #[arg(long)]
        no_envoy: bool,
        /// The Envoy binary.
        #[arg(long, value_name = "PATH")]
        envoy: Option<PathBuf>,
        #[command(flatten)]
        envoy_node: EnvoyNodeArgs,
        /// Envoy's log level.
        #[arg(long, default_value = "warning")]
        envoy_log_level: String,
        /// Largest request body the translation ext_proc accepts, in bytes; larger ones get 413.
        #[arg(long, default_value_t = crate::extproc::DEFAULT_MAX_BODY_BYTES)]
        max_request_body: usize,
        /// Have Envoy write one JSON line per request to PATH (`/dev/stdout` works): model,
        /// status, backend cluster and host, attempts, duration, and the token usage under the
        /// routes' llmRequestCosts keys.
        #[arg(long, value_name = "PATH")]
        access_log: Option<String>,
        /// Address of the endpoint picker for InferencePools (the ext_proc a pool's
        /// endpointPickerRef Service reaches); port 0 picks a free port. With mutual TLS
        /// (--tls-client-ca) it requires the same client certificates.
        #[arg(long, default_value = crate::picker::DEFAULT_LISTEN)]
        picker_address: std::net::SocketAddr,
        /// Serve no endpoint picker (pools then need one deployed apart).
        #[arg(long, conflicts_with = "picker_address")]
        no_picker: bool,
        /// Program only the Gateways whose GatewayClass has this `controllerName` [default:
        /// every Gateway in the files, whatever its class].
        #[arg(long, value_name = "NAME")]
        controller_name: Option<String>,
        #[command(flatten)]
        credentials: CredentialArgs,
        #[command(flatten)]
        ratelimit: RateLimitArgs,
        #[command(flatten)]
        drain: DrainArgs,
    },
    /// Run in a Kubernetes cluster: watch the objects at the API server, serve xDS and the
    /// translation ext_proc, and write conditions to the objects' status.
    ///
    /// The API server is found through $KUBECONFIG, ~/.kube/config or the in-cluster service
    /// account. xDS is served once every kind is listed; /readyz answers 503 until then and
    /// whenever a watch fails (the last good config keeps being served). A CRD that is not
    /// installed is looked for again every --discovery-interval. Of several replicas, the one
    /// holding the Lease writes status; all serve. Starts no Envoy unless --envoy is given.
    ///
    /// Callers must present a client certificate that chains to --tls-client-ca (mutual TLS):
    /// the ext_proc injects API keys, so an unauthenticated caller could read them. The Helm
    /// chart creates the certificates. --insecure-grpc turns this off.
    Serve {
        /// Address to serve xDS and the ext_proc on.
        #[arg(long, default_value = "0.0.0.0:18000")]
        xds_address: std::net::SocketAddr,
        /// Address of the admin HTTP server (probes, /metrics, /debug/*).
        #[arg(long, default_value = "0.0.0.0:19000")]
        admin_address: std::net::SocketAddr,
        /// Address the Envoy listeners bind to.
        #[arg(long, default_value = "0.0.0.0")]
        listener_address: String,
        /// Listener port when there is no Gateway.
        #[arg(long, default_value_t = 1975)]
        default_port: u16,
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "AIXDS_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Seconds between discovery checks for a CRD that is not installed.
        #[arg(long, default_value_t = 10)]
        discovery_interval: u64,
        /// Write no status (and take part in no leader election).
        #[arg(long)]
        no_status: bool,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "aixds")]
        lease_name: String,
        /// This replica's identity in the Lease (default: $POD_NAME, else $HOSTNAME).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Also start this Envoy binary as a child, pointed at this xDS server.
        #[arg(long, value_name = "PATH")]
        envoy: Option<PathBuf>,
        #[command(flatten)]
        envoy_node: EnvoyNodeArgs,
        /// Largest request body the translation ext_proc accepts, in bytes; larger ones get 413.
        #[arg(long, default_value_t = crate::extproc::DEFAULT_MAX_BODY_BYTES)]
        max_request_body: usize,
        #[command(flatten)]
        tls: ServeTlsArgs,
        /// Address of the endpoint picker for InferencePools (what a pool's endpointPickerRef
        /// Service points at).
        #[arg(long, default_value = "0.0.0.0:9002")]
        picker_address: std::net::SocketAddr,
        /// Serve no endpoint picker (pools then need one deployed apart).
        #[arg(long)]
        no_picker: bool,
        /// Have Envoy write one JSON line per request to PATH (see `aixds run --help`).
        #[arg(long, value_name = "PATH")]
        access_log: Option<String>,
        /// Program only the Gateways whose GatewayClass has this `controllerName`, and write
        /// status only on them, on those GatewayClasses and on what attaches to them: Gateways
        /// of other controllers are left to those.
        #[arg(long, value_name = "NAME", default_value = crate::api::DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
        /// The Service (NAMESPACE/NAME) in front of the Envoys, whose address Gateways report in
        /// `status.addresses` (the Helm chart passes its Envoy Service).
        #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_service)]
        gateway_service: Option<crate::api::ObjectKey>,
        #[command(flatten)]
        ratelimit: RateLimitArgs,
        #[command(flatten)]
        credentials: CredentialArgs,
        #[command(flatten)]
        drain: DrainArgs,
    },
    /// Print the ClusterRole `rules:` aixds needs (what `serve` reads and writes), as YAML.
    ///
    /// The chart keeps this output in charts/aixds/files/rbac-rules.yaml.
    Rbac,
    /// Print an Envoy bootstrap (YAML) that points an Envoy at aixds over ADS.
    ///
    /// In a cluster, --xds-address is a Service name, e.g. a headless Service
    /// `aixds-grpc.aixds.svc.cluster.local:18000` (Envoy resolves it to every ready replica).
    /// With --tls-ca, Envoy connects over TLS and checks that aixds's certificate carries the
    /// host of --xds-address (or --tls-server-name).
    Bootstrap {
        /// Where aixds serves xDS, as Envoy reaches it (an IP or a DNS name, with port); several
        /// comma-separated replicas share the load and cover for each other.
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_address: String,
        #[command(flatten)]
        envoy_node: EnvoyNodeArgs,
    },
    /// Print the CustomResourceDefinitions for the kinds aixds reads, generated from its types.
    ///
    /// With --out-dir, write one file per CRD instead (the chart keeps them in
    /// charts/aixds/crds/).
    Crds {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct EnvoyNodeArgs {
    /// Envoy's node id, as aixds logs and reports it.
    #[arg(long, default_value = "envoy")]
    pub node_id: String,
    /// Port of Envoy's admin interface (on 127.0.0.1).
    #[arg(long, default_value_t = 9901)]
    pub envoy_admin_port: u16,
    /// Use state-of-the-world ADS instead of delta.
    #[arg(long)]
    pub sotw: bool,
    #[command(flatten)]
    pub tls: EnvoyTlsArgs,
}

impl EnvoyNodeArgs {
    fn bootstrap(&self, xds_address: String) -> crate::bootstrap::BootstrapOptions {
        crate::bootstrap::BootstrapOptions {
            xds_address,
            node_id: self.node_id.clone(),
            admin_port: self.envoy_admin_port,
            sotw: self.sotw,
            tls: self.tls.upstream(),
            ..Default::default()
        }
    }
}

/// How Envoy reaches aixds over TLS. The paths are where Envoy reads the files (in a
/// container: where the Secret is mounted).
#[derive(clap::Args, Debug, Clone)]
pub struct EnvoyTlsArgs {
    /// Envoy connects to aixds over TLS, trusting these CA certificates (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<String>,
    /// Envoy's client certificate (PEM), for an aixds that requires one.
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_client_key"])]
    pub tls_client_cert: Option<String>,
    /// The private key of --tls-client-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_client_cert")]
    pub tls_client_key: Option<String>,
    /// The DNS name aixds's certificate carries, also sent as SNI (default: the host of the
    /// xDS address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl EnvoyTlsArgs {
    fn upstream(&self) -> Option<crate::bootstrap::UpstreamTls> {
        Some(crate::bootstrap::UpstreamTls {
            ca: self.tls_ca.clone()?,
            client_cert: self
                .tls_client_cert
                .clone()
                .zip(self.tls_client_key.clone())
                .map(|(cert, key)| crate::bootstrap::ClientCert { cert, key }),
            server_name: self.tls_server_name.clone(),
        })
    }
}

/// A burst of source events that may be half done (a file still being written) is one batch
/// once this long passes without events (complete ones wake the batch at once, see
/// `source::debounce`)...
const BATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(20);
/// ...or this long after its first event.
const BATCH_MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

fn picker_options(
    no_picker: bool,
    listen: std::net::SocketAddr,
) -> Option<crate::picker::PickerOptions> {
    (!no_picker).then(|| crate::picker::PickerOptions { listen, ..Default::default() })
}

/// The client certificate Envoy presents to endpoint pickers: with mutual TLS and aixds's own
/// picker served, Envoy's (--tls-client-cert/--tls-client-key, paths in Envoy's filesystem) is
/// required, because the picker then requires it too.
fn picker_client_cert(
    grpc: Option<&crate::run::GrpcListen>,
    picker: bool,
    envoy_tls: &EnvoyTlsArgs,
) -> anyhow::Result<Option<crate::bootstrap::ClientCert>> {
    let client = envoy_tls
        .tls_client_cert
        .clone()
        .zip(envoy_tls.tls_client_key.clone())
        .map(|(cert, key)| crate::bootstrap::ClientCert { cert, key });
    let mutual = matches!(grpc, Some(g) if matches!(g.auth, crate::run::TcpAuth::MutualTls(_)));
    if mutual && picker && client.is_none() {
        anyhow::bail!(
            "with --tls-client-ca the endpoint picker requires Envoy's client certificate too: \
             give --tls-ca, --tls-client-cert and --tls-client-key (where Envoy reads them), \
             or --no-picker"
        );
    }
    Ok(client)
}

/// `run` and `serve`: start, then serve until a signal or until Envoy exits.
fn run_until_stopped(opts: crate::run::RunOptions) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async { crate::run::start(opts).await?.wait().await })?;
    Ok(ExitCode::SUCCESS)
}

/// TLS on the gRPC server that serves xDS and the ext_proc.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeTlsArgs {
    /// Serve xDS and the ext_proc over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate that chains to these CA certificates (PEM): mutual TLS.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// INSECURE: accept gRPC callers on TCP that present no client certificate. Anyone who
    /// can reach the port can then read every API key the ext_proc injects and the whole
    /// configuration. Only for a network nobody else can reach.
    #[arg(long)]
    pub insecure_grpc: bool,
}

impl ServeTlsArgs {
    fn server_tls(&self) -> Option<crate::run::ServerTls> {
        Some(crate::run::ServerTls {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The TCP listener at `addr`, refused without client authentication unless
    /// --insecure-grpc.
    fn listen(&self, addr: std::net::SocketAddr) -> anyhow::Result<crate::run::GrpcListen> {
        Ok(crate::run::GrpcListen::new(addr, self.server_tls(), self.insecure_grpc)?)
    }
}

/// Where cloud credentials get their tokens.
#[derive(clap::Args, Debug, Clone)]
pub struct CredentialArgs {
    /// Entra ID's authority host, for AzureCredentials policies (another Azure cloud, or a test
    /// endpoint; plain http only on loopback).
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_name = "URL",
          default_value = crate::extproc::credentials::azure::DEFAULT_AUTHORITY_HOST,
          value_parser = parse_token_host)]
    pub azure_authority_host: String,
}

impl CredentialArgs {
    fn options(&self) -> crate::extproc::credentials::CredentialOptions {
        crate::extproc::credentials::CredentialOptions {
            azure_authority_host: self.azure_authority_host.clone(),
        }
    }
}

/// Where the rate limit service keeps its counters.
#[derive(clap::Args, Debug, Clone)]
pub struct RateLimitArgs {
    /// Keep rate limit counters in this Redis (`redis://[[user]:password@]host[:port][/db]`), so
    /// that every replica and every Envoy share one budget; without it they are kept in this
    /// process, which is right for one replica only.
    #[arg(long, env = "AIXDS_RATELIMIT_REDIS", value_name = "URL",
          value_parser = crate::ratelimit::redis::RedisConfig::parse)]
    pub ratelimit_redis: Option<crate::ratelimit::redis::RedisConfig>,
    /// How long one rate limit check may wait for Redis before the policy's failure mode
    /// applies (fail open unless the policy says otherwise).
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 100)]
    pub ratelimit_redis_timeout: u64,
    /// Refuse requests a rate limit applies to (503) when their check cannot be made (Redis
    /// or aixds unreachable), instead of letting them through.
    #[arg(long)]
    pub ratelimit_fail_closed: bool,
    /// How many proxies in front of Envoy append to X-Forwarded-For (a cloud load balancer: 1):
    /// the client address rate limits select on is that many hops from the right. 0 (the
    /// default) takes the connection's address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub xff_trusted_hops: u32,
}

impl RateLimitArgs {
    fn options(&self) -> crate::ratelimit::RateLimitOptions {
        crate::ratelimit::RateLimitOptions {
            redis: self.ratelimit_redis.clone(),
            timeout: std::time::Duration::from_millis(self.ratelimit_redis_timeout.max(1)),
            fail_closed: self.ratelimit_fail_closed,
        }
    }
}

/// How a replica stops on SIGTERM without losing requests.
#[derive(clap::Args, Debug, Clone)]
pub struct DrainArgs {
    /// On SIGTERM, keep serving this many seconds after reporting NOT_SERVING (gRPC health)
    /// and 503 (/readyz), so that Envoys move new requests to other replicas first.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub drain_delay: u64,
    /// Then give requests in flight this many seconds to finish.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub drain_timeout: u64,
}

impl DrainArgs {
    fn options(&self) -> crate::run::DrainOptions {
        crate::run::DrainOptions {
            delay: std::time::Duration::from_secs(self.drain_delay),
            timeout: std::time::Duration::from_secs(self.drain_timeout),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Json,
    Dot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A token endpoint's scheme and host, which a client secret may be sent to.
fn parse_token_host(s: &str) -> Result<String, String> {
    crate::api::token_endpoint(s).map(|_| s.trim_end_matches('/').to_string())
}

fn parse_service(s: &str) -> Result<crate::api::ObjectKey, String> {
    let (namespace, name) = s.split_once('/').ok_or("expected NAMESPACE/NAME")?;
    let key = crate::api::ObjectKey::new(crate::api::Kind::Service, namespace, name);
    key.validate()?;
    Ok(key)
}

fn parse_key(s: &str) -> Result<crate::api::ObjectKey, String> {
    crate::api::ObjectKey::parse(s).ok_or_else(|| {
        format!("{s:?} is not Kind/namespace/name (or Kind/name for cluster-scoped kinds)")
    })
}

/// Logs to stderr, filtered by `AIXDS_LOG`, else `RUST_LOG`, else `info`. A variable that is not
/// a filter is reported once logging runs, at `info`.
pub fn init_logging(format: LogFormat) {
    let (filter, invalid) = match log_directive(|name| std::env::var(name).ok()) {
        None => (tracing_subscriber::EnvFilter::new("info"), None),
        Some((var, directive)) => match tracing_subscriber::EnvFilter::try_new(&directive) {
            Ok(filter) => (filter, None),
            Err(e) => (tracing_subscriber::EnvFilter::new("info"), Some(format!("{var}: {e}"))),
        },
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(invalid) = invalid {
        tracing::warn!("ignoring a log filter that does not parse, logging at info: {invalid}");
    }
}

/// The log filter variable that is set, `AIXDS_LOG` first, with its value.
fn log_directive(var: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    ["AIXDS_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|name| Some((name, var(name).filter(|v| !v.is_empty())?)))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { paths, output } => {
            let loaded = match load(paths) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(Verdict::Unreadable.exit_code()));
                }
            };
            let report = Report::new(&loaded);
            let mut stdout = std::io::stdout().lock();
            match output {
                OutputFormat::Text => {
                    stdout.write_all(report.text().as_bytes())?;
                }
                OutputFormat::Json => {
                    serde_json::to_writer_pretty(&mut stdout, &report.json())?;
                    writeln!(stdout)?;
                }
            }
            Ok(ExitCode::from(report.verdict().exit_code()))
        }
        Command::Graph { paths, format, focus, depth } => {
            use crate::graph::export::{View, to_dot_view, to_json_view};
            let loaded = load(paths)?;
            for warning in validate::file_messages(&loaded.source) {
                eprintln!("{warning}");
            }
            let view = match &focus {
                Some(key) => View::focus(&loaded.graph, key, depth)?,
                None => View::default(),
            };
            let mut stdout = std::io::stdout().lock();
            match format {
                GraphFormat::Json => {
                    serde_json::to_writer_pretty(&mut stdout, &to_json_view(&loaded.graph, &view))?;
                    writeln!(stdout)?;
                }
                GraphFormat::Dot => {
                    stdout.write_all(to_dot_view(&loaded.graph, &view).as_bytes())?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { object, paths, admin } => explain::run(&object, paths, admin),
        Command::Run {
            paths,
            xds_address,
            tls,
            admin_address,
            listener_address,
            default_port,
            no_envoy,
            envoy,
            envoy_node,
            envoy_log_level,
            max_request_body,
            access_log,
            picker_address,
            no_picker,
            controller_name,
            credentials,
            ratelimit,
            drain,
        } => {
            let envoy = match no_envoy {
                true => None,
                false => Some(crate::run::EnvoyOptions {
                    binary: crate::run::find_envoy(envoy)?,
                    // The Envoy started here uses the private socket, which takes no TLS.
                    bootstrap: crate::bootstrap::BootstrapOptions {
                        tls: None,
                        ..envoy_node.bootstrap(String::new())
                    },
                    log_level: envoy_log_level,
                    concurrency: None,
                }),
            };
            let xds_address = match (xds_address, no_envoy) {
                (None, true) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 18000))),
                (address, _) => address,
            };
            let grpc = xds_address.map(|addr| tls.listen(addr)).transpose()?;
            let picker_client_cert =
                picker_client_cert(grpc.as_ref(), !no_picker, &envoy_node.tls)?;
            let opts = crate::run::RunOptions {
                source: crate::source::SourceOptions::Files(paths),
                grpc,
                admin_listen: Some(admin_address),
                compile: crate::compile::CompileOptions {
                    listener_address,
                    default_port,
                    access_log,
                    picker_client_cert,
                    ratelimit_fail_closed: ratelimit.ratelimit_fail_closed,
                    xff_trusted_hops: ratelimit.xff_trusted_hops,
                    controller_name,
                },
                envoy,
                extproc: crate::extproc::ExtProcOptions {
                    max_body_bytes: max_request_body,
                    credentials: credentials.options(),
                },
                picker: picker_options(no_picker, picker_address),
                ratelimit: ratelimit.options(),
                debounce: BATCH_DEBOUNCE,
                max_delay: BATCH_MAX_DELAY,
                drain: drain.options(),
            };
            run_until_stopped(opts)
        }
        Command::Serve {
            xds_address,
            admin_address,
            listener_address,
            default_port,
            namespace,
            discovery_interval,
            no_status,
            lease_namespace,
            lease_name,
            identity,
            envoy,
            envoy_node,
            max_request_body,
            tls,
            picker_address,
            no_picker,
            access_log,
            controller_name,
            gateway_service,
            credentials,
            ratelimit,
            drain,
        } => {
            let identity = identity
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("aixds-{}", std::process::id()));
            let status = (!no_status).then(|| crate::kube::lease::LeaseOptions {
                name: lease_name,
                ..crate::kube::lease::LeaseOptions::new(lease_namespace, identity)
            });
            let grpc = tls.listen(xds_address)?;
            let picker_client_cert = picker_client_cert(Some(&grpc), !no_picker, &envoy_node.tls)?;
            let envoy = envoy.map(|binary| crate::run::EnvoyOptions {
                binary,
                // The Envoy started here uses the private socket, which takes no TLS.
                bootstrap: crate::bootstrap::BootstrapOptions {
                    tls: None,
                    ..envoy_node.bootstrap(String::new())
                },
                log_level: "warning".into(),
                concurrency: None,
            });
            let opts = crate::run::RunOptions {
                source: crate::source::SourceOptions::Kubernetes(Box::new(
                    crate::kube::KubeOptions {
                        config: None,
                        namespace,
                        discovery_interval: std::time::Duration::from_secs(
                            discovery_interval.max(1),
                        ),
                        status,
                        gateway_service,
                    },
                )),
                grpc: Some(grpc),
                admin_listen: Some(admin_address),
                compile: crate::compile::CompileOptions {
                    listener_address,
                    default_port,
                    access_log,
                    picker_client_cert,
                    ratelimit_fail_closed: ratelimit.ratelimit_fail_closed,
                    xff_trusted_hops: ratelimit.xff_trusted_hops,
                    controller_name: Some(controller_name),
                },
                envoy,
                extproc: crate::extproc::ExtProcOptions {
                    max_body_bytes: max_request_body,
                    credentials: credentials.options(),
                },
                picker: picker_options(no_picker, picker_address),
                ratelimit: ratelimit.options(),
                debounce: BATCH_DEBOUNCE,
                max_delay: BATCH_MAX_DELAY,
                drain: drain.options(),
            };
            run_until_stopped(opts)
        }
        Command::Rbac => {
            print!("{}", crate::kube::rbac::rules_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap { xds_address, envoy_node } => {
            let b = crate::bootstrap::bootstrap(&envoy_node.bootstrap(xds_address))?;
            print!("{}", serde_norway::to_string(&b)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out_dir } => {
            let crds = crate::crds::all();
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for (file, crd) in &crds {
                        let path = dir.join(file);
                        std::fs::write(&path, crate::crds::to_yaml(crd))
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
                None => {
                    let docs: Vec<String> =
                        crds.iter().map(|(_, crd)| crate::crds::to_yaml(crd)).collect();
                    print!("{}", docs.join("---\n"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
