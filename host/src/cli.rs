//! The `lake` command line: `serve`, `migrate`, `config check`, and catalog, promotion and lineage
//! commands that call the same [`Lake`] and services the HTTP API uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::catalog::{DatasetId, SearchQuery};
use crate::config::{self, CliOverrides, Config};
use crate::identity::Visibility;
use crate::lake::{Lake, LakeError, RegisterRequest};
use crate::layers::Layer;
use crate::promotion::PromoteRequest;
use crate::provenance::Direction;

mod audit;
mod backup;
mod files;
mod fsck;
mod ingest;
mod tokens;
mod users;

/// The lake: a governed data lake for biomedical research labs.
#[derive(Debug, Parser)]
#[command(name = "lake", version, about)]
struct Cli {
    /// Configuration file (default: $LAKE_CONFIG, else ./lake.toml if present, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Bearer token for a running lake that asks for one (`lake upload`, `merge`, `save-merged`).
    #[arg(long, global = true, env = "LAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply pending catalog migrations.
    Migrate,
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Catalog commands.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Promote a dataset to the adjacent layer.
    Promote {
        /// Dataset id.
        id: String,
        /// Target layer.
        #[arg(long = "to")]
        to: Layer,
        /// Notes kept on the promotion edge.
        #[arg(long)]
        notes: Option<String>,
        /// Why (required to promote to curated or archive), kept in provenance.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a dataset's lineage.
    Lineage {
        /// Dataset id.
        id: String,
        /// Show the graph (ancestors and descendants) instead of the linear history.
        #[arg(long)]
        graph: bool,
        /// Print W3C PROV-JSON.
        #[arg(long, conflicts_with = "graph")]
        prov: bool,
        /// Steps to walk.
        #[arg(long, default_value_t = 50)]
        depth: u32,
    },
    /// Per-layer counts and immutability.
    Layers,
    /// Plugin commands.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Upload CSV or XLSX files to a running lake (POST /files/upload), with a progress bar.
    /// Prints one JSON line per file: its id, version, format, rows and columns.
    Upload {
        /// Files to upload.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The lake's URL (default: http:// + server.listen).
        #[arg(long, env = "LAKE_SERVER")]
        server: Option<String>,
    },
    /// Join two uploaded files' tables on a running lake (GET /files/merge); prints the cache key,
    /// counts, schema and preview.
    Merge {
        #[command(flatten)]
        args: files::MergeArgs,
        /// The lake's URL (default: http:// + server.listen).
        #[arg(long, env = "LAKE_SERVER")]
        server: Option<String>,
    },
    /// Save a merge result as a processed dataset (POST /files/save_merged).
    SaveMerged {
        /// The cache key `lake merge` printed.
        cache_key: String,
        /// The new dataset's name.
        #[arg(long)]
        name: String,
        /// parquet or csv.
        #[arg(long, default_value = "parquet")]
        format: String,
        /// The lake's URL (default: http:// + server.listen).
        #[arg(long, env = "LAKE_SERVER")]
        server: Option<String>,
    },
    /// Backup commands: run, list, verify.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Users and service accounts: add, list, disable.
    #[command(subcommand)]
    User(users::UserCmd),
    /// Bearer tokens: create, list, revoke.
    #[command(subcommand)]
    Token(tokens::TokenCmd),
    /// Administration: the first admin token.
    #[command(subcommand)]
    Admin(tokens::AdminCmd),
    /// The audit log: requests that changed something, and refusals, newest first.
    Audit(audit::AuditArgs),
    /// Check the catalog against the store (every file has its object, every object its row, no
    /// claim, promotion or job left half-done); `--repair` fixes what is safe.
    Fsck(fsck::FsckArgs),
    /// Restore a backup into this lake, which must be empty (objects, then the catalog).
    Restore {
        /// The backup's id (`lake backup list`).
        #[arg(long = "from")]
        from: String,
    },
    /// Collect lake.toml's [[sources]] now, each as a recorded job (the same as
    /// POST /collections), and parse what came; prints one JSON line per source.
    Ingest {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Show what would be collected, without a request.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a plugin over datasets (the same as POST /pipelines/run).
    Run {
        /// Plugin name.
        plugin: String,
        /// Input dataset ids.
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Layer of the output dataset.
        #[arg(long, default_value = "processed")]
        target_layer: Layer,
        /// For a parser: the file of the input dataset to read.
        #[arg(long)]
        file: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCmd {
    /// Loaded plugins and refused components.
    List,
    /// One plugin's manifest and limits.
    Inspect { name: String },
    /// Run a plugin on local files, outside the catalog: a parser on one file, a step on Parquet
    /// files, a connector on nothing (its objects go to --out, a directory). Prints a summary.
    Run {
        /// Plugin name.
        name: String,
        /// Input files.
        inputs: Vec<PathBuf>,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Where to write the output: a Parquet file (parsers, steps) or a directory (connectors).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Scaffold a new plugin crate that builds as-is.
    New {
        /// Plugin name: lowercase letters, digits and '-'.
        name: String,
        /// `parser` or `step`.
        #[arg(long, value_parser = ["parser", "step"])]
        kind: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The lake-sdk crate to depend on (default: the one this lake was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print every configuration problem at once, or the effective configuration (secrets redacted).
    Check,
}

#[derive(Debug, Subcommand)]
enum CatalogCmd {
    /// Search datasets.
    List {
        #[arg(long)]
        layer: Option<Layer>,
        #[arg(long)]
        source: Option<String>,
        /// Free text.
        #[arg(long)]
        q: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one dataset.
    Show { id: String },
    /// List a dataset's files.
    Files { id: String },
    /// Datasets and bytes per layer and source.
    Stats,
    /// Register a dataset (and objects already at --object-path).
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        source: String,
        #[arg(long, default_value = "raw")]
        layer: Layer,
        #[arg(long)]
        external_id: Option<String>,
        #[arg(long)]
        object_path: Option<String>,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
    },
    /// Upload a local file into a dataset.
    Upload {
        id: String,
        file: PathBuf,
        /// Name in the dataset (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a non-raw dataset.
    Delete {
        id: String,
        /// Why (required), kept in provenance.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Entry point of the `lake` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What the command line does to a lake directly is recorded as the account running it; the
    // server records each request's own caller instead.
    let actor = (!matches!(cli.command, Command::Serve { .. })).then(local_actor);
    match runtime.block_on(crate::provenance::acting_as(actor, run(cli))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The account running the command line, as provenance names it.
fn local_actor() -> crate::provenance::Actor {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "local".into());
    crate::provenance::Actor {
        user,
        via: Some("cli".into()),
    }
}

fn load_config(
    cli: &Cli,
    overrides: &CliOverrides,
) -> std::result::Result<Config, config::ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path = config::resolve_path(cli.config.as_deref(), &env);
    config::load(path.as_deref(), &env, overrides)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn id_arg(s: &str) -> Result<DatasetId> {
    s.parse().map_err(|e: String| anyhow::anyhow!(e))
}

fn lake_err(e: LakeError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let overrides = match &cli.command {
        Command::Serve { listen } => CliOverrides {
            listen: listen.clone(),
        },
        _ => CliOverrides::default(),
    };
    let cfg = match load_config(&cli, &overrides) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("{problems}");
            return Ok(ExitCode::from(2));
        }
    };
    crate::telemetry::init_logging(&cfg.log);

    let token = cli.token.clone();
    match cli.command {
        Command::Config(ConfigCmd::Check) => {
            print!("{}", cfg.to_redacted_toml());
            eprintln!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => serve(cfg).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate => {
            let mut cfg = cfg;
            cfg.catalog.auto_migrate = true;
            Lake::open(&cfg).await?;
            eprintln!("catalog migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog(cmd) => {
            let lake = Lake::open(&cfg).await?;
            catalog_cmd(&lake, cmd).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Promote {
            id,
            to,
            notes,
            reason,
        } => {
            let lake = Lake::open(&cfg).await?;
            let p = lake
                .promotions()
                .promote(PromoteRequest {
                    dataset_id: id_arg(&id)?,
                    target_layer: to,
                    notes,
                    reason,
                })
                .await
                .map_err(lake_err)?;
            print_json(&p.target)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lineage {
            id,
            graph,
            prov,
            depth,
        } => {
            let lake = Lake::open(&cfg).await?;
            let id = id_arg(&id)?;
            if graph {
                print_json(
                    &lake
                        .graph(id, depth, Direction::Both, Visibility::ALL)
                        .await
                        .map_err(lake_err)?,
                )?;
            } else if prov {
                print_json(
                    &lake
                        .prov_json(id, depth, Visibility::ALL)
                        .await
                        .map_err(lake_err)?,
                )?;
            } else {
                print_json(&lake.lineage(id, Visibility::ALL).await.map_err(lake_err)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(PluginCmd::New {
            name,
            kind,
            dir,
            sdk,
        }) => {
            let kind = if kind == "parser" {
                crate::plugins::Kind::Parser
            } else {
                crate::plugins::Kind::Step
            };
            let sdk = match sdk {
                Some(s) => s,
                None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk")),
            };
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("the SDK is not at {}; pass --sdk", sdk.display()))?;
            let root = crate::scaffold::new_plugin(&name, kind, &dir, &sdk)?;
            eprintln!(
                "created {}\n  cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                root.display(),
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(cmd) => {
            let plugins =
                crate::plugins::Plugins::open(&cfg.plugins).map_err(|e| anyhow::anyhow!(e))?;
            match cmd {
                PluginCmd::List => print_json(
                    &serde_json::json!({"plugins": plugins.list(), "rejected": plugins.rejected()}),
                )?,
                PluginCmd::New { .. } => {
                    anyhow::bail!("plugin new is handled before the registry starts")
                }
                PluginCmd::Run {
                    name,
                    inputs,
                    params,
                    out,
                } => return plugin_run(&plugins, &name, &inputs, &params, out.as_deref()).await,
                PluginCmd::Inspect { name } => {
                    let m = plugins
                        .manifest(&name)
                        .await
                        .ok_or_else(|| anyhow::anyhow!("no plugin named {name:?}"))?;
                    print_json(
                        &serde_json::json!({"manifest": m, "limits": plugins.limits_for(&name)}),
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            plugin,
            inputs,
            params,
            target_layer,
            file,
        } => {
            let lake = with_plugins(Lake::open(&cfg).await?, &cfg)?;
            let req = crate::pipeline::RunRequest {
                plugin,
                inputs: inputs.iter().map(|i| id_arg(i)).collect::<Result<_>>()?,
                params: serde_json::from_str(&params).context("--params is not valid JSON")?,
                target_layer: Some(target_layer),
                file,
                name: None,
            };
            match lake.pipelines().run(req).await.map_err(lake_err)? {
                crate::pipeline::RunOutcome::Succeeded(run) => {
                    print_json(&run)?;
                    Ok(ExitCode::SUCCESS)
                }
                crate::pipeline::RunOutcome::Failed(f) => {
                    eprintln!("error: {} (recorded as run {})", f.error, f.run_id);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Backup(cmd) => {
            let lake = Lake::open(&cfg).await?;
            backup::backup(&lake, cmd).await
        }
        Command::User(cmd) => {
            let lake = Lake::open(&cfg).await?;
            users::user(&lake, cmd).await
        }
        Command::Token(cmd) => {
            let lake = Lake::open(&cfg).await?;
            tokens::token(&lake, cmd).await
        }
        Command::Admin(cmd) => {
            let lake = Lake::open(&cfg).await?;
            tokens::admin(&lake, cmd).await
        }
        Command::Audit(args) => {
            let lake = Lake::open(&cfg).await?;
            audit::audit(&lake, args).await
        }
        Command::Fsck(args) => {
            let lake = Lake::open(&cfg).await?;
            fsck::fsck(&lake, args).await
        }
        Command::Restore { from } => {
            let lake = Lake::open(&cfg).await?;
            backup::restore(&lake, &from).await
        }
        Command::Ingest { source, dry_run } => {
            let lake = with_plugins(Lake::open(&cfg).await?, &cfg)?;
            ingest::ingest(&lake, &cfg, source.as_deref(), dry_run).await
        }
        Command::Upload { files, server } => {
            let server = files::Server::new(server, &cfg.server.listen, token);
            Ok(if files::upload(&server, &files).await? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Merge { args, server } => {
            let server = files::Server::new(server, &cfg.server.listen, token);
            print_json(&files::merge(&server, args).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SaveMerged {
            cache_key,
            name,
            format,
            server,
        } => {
            let server = files::Server::new(server, &cfg.server.listen, token);
            print_json(&files::save_merged(&server, &cache_key, &name, &format).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Layers => {
            let lake = Lake::open(&cfg).await?;
            print_json(&lake.layers().await.map_err(lake_err)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn catalog_cmd(lake: &Lake, cmd: CatalogCmd) -> Result<()> {
    match cmd {
        CatalogCmd::List {
            layer,
            source,
            q,
            tags,
            limit,
        } => {
            let query = SearchQuery {
                layer,
                hidden_layers: Vec::new(),
                source,
                q,
                tags: tags
                    .map(|t| {
                        t.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                limit: limit.clamp(1, 500),
                ..SearchQuery::default()
            };
            print_json(&lake.search(&query).await.map_err(lake_err)?)
        }
        CatalogCmd::Show { id } => {
            print_json(&lake.get_dataset(id_arg(&id)?).await.map_err(lake_err)?)
        }
        CatalogCmd::Files { id } => {
            print_json(&lake.dataset_files(id_arg(&id)?).await.map_err(lake_err)?)
        }
        CatalogCmd::Stats => print_json(&lake.stats().await.map_err(lake_err)?),
        CatalogCmd::Register {
            name,
            source,
            layer,
            external_id,
            object_path,
            metadata,
            tags,
        } => {
            let metadata = match metadata {
                Some(m) => serde_json::from_str(&m).context("--metadata is not valid JSON")?,
                None => serde_json::Value::Null,
            };
            let req = RegisterRequest {
                name,
                source,
                external_id,
                layer,
                bucket: None,
                object_path,
                prefix: None,
                metadata,
                tags: tags
                    .map(|t| t.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                action: None,
            };
            print_json(&lake.register(req).await.map_err(lake_err)?)
        }
        CatalogCmd::Upload { id, file, name } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the file has no usable name; pass --name")?
                    .to_owned(),
            };
            let f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10);
            print_json(
                &lake
                    .put_file(id_arg(&id)?, &name, None, Box::pin(stream))
                    .await
                    .map_err(lake_err)?,
            )
        }
        CatalogCmd::Delete { id, reason } => {
            lake.delete(id_arg(&id)?, reason.as_deref())
                .await
                .map_err(lake_err)?;
            eprintln!("deleted");
            Ok(())
        }
    }
}

/// Starts the plugin runtime for the commands that run plugins.
fn with_plugins(lake: Lake, cfg: &Config) -> Result<Lake> {
    let plugins = crate::plugins::Plugins::open(&cfg.plugins)
        .map_err(|e| anyhow::anyhow!(e))
        .context("starting the plugin runtime")?;
    Ok(lake.with_plugins(plugins))
}

/// Runs the HTTP server until Ctrl-C or SIGTERM.
pub async fn serve(cfg: Config) -> Result<()> {
    let metrics = crate::telemetry::init_metrics();
    // Components load in the background: a cold cache takes a minute or more to compile them, and
    // the server answers meanwhile (a request for a plugin waits for it; GET /plugins says which).
    let plugins = crate::plugins::Plugins::start(&cfg.plugins)
        .map_err(|e| anyhow::anyhow!(e))
        .context("starting the plugin runtime")?;
    let lake = Lake::open(&cfg).await?.with_plugins(plugins);
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    for caveat in lake.backups().caveats() {
        tracing::warn!("{caveat}");
    }
    if lake.settings().access.enforce {
        tracing::info!("Requests present bearer tokens (`lake admin bootstrap` issues the first)");
    } else {
        tracing::info!(
            listen = cfg.server.listen,
            "Access is open: no token is asked on this loopback address ([auth] mode)"
        );
    }
    // Scheduled backups and sources, and the check for jobs whose server died.
    let scheduler = lake
        .jobs()
        .spawn_scheduler(std::time::Duration::from_secs(30));
    let stopping = lake.clone();
    let app = crate::http::router(crate::http::AppState::new(lake, metrics));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, catalog = %if cfg.catalog.url.expose().starts_with("sqlite:") { "sqlite" } else { "postgres" }, storage = ?cfg.storage.backend, "Lake listening");
    eprintln!("lake listening on http://{addr} (API docs: http://{addr}/docs)");
    // The client's address reaches the audit log and the failed-authentication limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .context("serving HTTP")?;
    scheduler.abort();
    // A backup or collection under way may finish; what does not is recorded as stopped.
    stopping.jobs().stop(crate::jobs::STOP_GRACE).await;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("Shutting down");
}

/// `lake plugin run`: prints the summary; exit code 2 when the input or parameters are at fault.
async fn plugin_run(
    plugins: &crate::plugins::Plugins,
    name: &str,
    inputs: &[PathBuf],
    params: &str,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let params: serde_json::Value =
        serde_json::from_str(params).context("--params must be a JSON object")?;
    let (summary, error) = plugins.run_local(name, inputs, &params, out).await?;
    print_json(&summary)?;
    Ok(match error {
        None => ExitCode::SUCCESS,
        Some(e) if e.is_caller_fault() => ExitCode::from(2),
        Some(_) => ExitCode::FAILURE,
    })
}
