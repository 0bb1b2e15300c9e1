//! The `refedge` binary: parse the command line, load settings, start
//! logging, and hand over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use refedge::clock::SystemClock;
use refedge::config::Config;
use std::path::PathBuf;
use std::sync::Arc;

/// jemalloc: clicks are allocated on the redirect thread and freed by the
/// writer, a pattern glibc's per-thread arenas handle badly. Measured with
/// `loadtest/run`: server CPU per redirect 17.3 -> 15.2 us, peak RSS 306 ->
/// 181 MB.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation: return freed memory
/// to the system from one background thread instead of inline in whichever
/// thread frees or allocates. Likely cause of the stalls it removed: inline
/// purging in the redirect thread after the fraud pruner frees visitor
/// windows. `loadtest/run` fixed-rate p99 / p99.9 went from 1.3-3.4 /
/// 4.4-9.4 ms to 0.85-1.15 / 2.3-3.0 ms (CPU per redirect within
/// run-to-run noise). `_RJEM_MALLOC_CONF` in the environment still
/// overrides.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,max_background_threads:1\0";

#[derive(Parser)]
#[command(name = "refedge", version, about = "Referral-tracking edge server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, data in ./refedge-data).
    Serve {
        /// TOML settings file; REFEDGE_* environment variables override it,
        /// and the flags below override both.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (setting `listen`), e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Folder for the database, keys and admin token (setting `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Join a cluster through this NATS server (setting
        /// `cluster.nats_url`), e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Run a JSON-lines file of events through a fresh calculator and print
    /// the outcome as JSON.
    Replay {
        /// The events, one JSON object per line.
        file: PathBuf,
        /// Programs and settings (TOML); the presets otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Balances as of this time (RFC 3339); default: the last event's time.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Run (or with --dry-run, preview) a program's payout batch on a date,
    /// through the running server's API, and print it.
    Payouts {
        /// Program key.
        #[arg(long)]
        program: String,
        /// Payout date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        as_of: String,
        /// Show what would be paid; record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Server URL; default http://<listen> from the settings.
        #[arg(long)]
        server: Option<String>,
        /// TOML settings file (for listen and data_dir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Classify user agents read from standard input, one per line: prints
    /// `bot` or `human` for each, in order.
    CheckUa {
        /// Also print why, after a tab (`bot\t<reason>`).
        #[arg(long)]
        why: bool,
    },
    /// Cluster mode: print the nodes, their roles, the active calculator,
    /// its lease's age and the lags, read from NATS.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Validate settings and print the programs they define, then exit.
    CheckConfig {
        /// TOML settings file; REFEDGE_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes, roles, the active calculator, lease age and lags.
    Status {
        /// NATS URL (setting `cluster.nats_url`).
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// TOML settings file (for the cluster's NATS settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn load(config: Option<&PathBuf>) -> Config {
    load_with(config, Vec::new())
}

/// Settings from the file, then the environment, then `flags` (setting
/// name, value), later winning.
fn load_with(config: Option<&PathBuf>, flags: Vec<(&str, String)>) -> Config {
    let flags = flags.into_iter().map(|(k, v)| {
        (
            format!("{}{}", refedge::config::ENV_PREFIX, k.to_uppercase()),
            v,
        )
    });
    match Config::load(config.map(PathBuf::as_path), std::env::vars().chain(flags)) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("refedge: {errors}");
            std::process::exit(2);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let c = load(config.as_ref());
            println!(
                "settings are valid; listen {} data_dir {}",
                c.listen,
                c.data_dir.display()
            );
            for p in c.programs.values() {
                println!(
                    "program {}: {} cookie {} days, {}, hosts {}",
                    p.key,
                    p.name,
                    p.cookie_days,
                    p.attribution,
                    p.allowed_hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            Ok(())
        }
        Command::Cluster {
            command: ClusterCommand::Status { nats, config, json },
        } => {
            let mut flags = Vec::new();
            if let Some(n) = nats {
                flags.push(("cluster__nats_url", n));
            }
            let c = load_with(config.as_ref(), flags);
            let Some(cluster) = c.cluster else {
                eprintln!("refedge: no cluster settings: pass --nats URL or set cluster.nats_url");
                std::process::exit(2);
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = rt
                .block_on(refedge::cluster::status::status(cluster))
                .context("reading the cluster's state from NATS")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
        Command::CheckUa { why } => {
            use std::io::{BufRead, Write};
            let mut input = std::io::stdin().lock();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            // Logs from elsewhere are not always UTF-8: read bytes, and
            // classify what is not text by its readable part.
            let mut line = Vec::new();
            while input.read_until(b'\n', &mut line)? > 0 {
                let text = String::from_utf8_lossy(&line);
                let ua = text.trim_end_matches(['\n', '\r']);
                match refedge::fraud::ua::bot_reason(ua) {
                    Some(reason) if why => writeln!(out, "bot\t{reason}")?,
                    Some(_) => writeln!(out, "bot")?,
                    None => writeln!(out, "human")?,
                }
                line.clear();
            }
            out.flush()?;
            Ok(())
        }
        Command::Replay {
            file,
            config,
            as_of,
        } => {
            let c = load(config.as_ref());
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match refedge::replay::parse(&text, &c.programs) {
                Ok(events) => {
                    let outcome = refedge::replay::run(&events, &c.programs, as_of);
                    println!("{}", serde_json::to_string_pretty(&outcome)?);
                    Ok(())
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}:{}: {}", file.display(), e.line, e.message);
                    }
                    eprintln!("refedge: {} bad line(s); nothing was applied", errors.len());
                    std::process::exit(1);
                }
            }
        }
        Command::Payouts {
            program,
            as_of,
            dry_run,
            server,
            config,
        } => {
            let c = load(config.as_ref());
            let token = match &c.admin_token {
                Some(t) => t.clone(),
                None => std::fs::read_to_string(c.data_dir.join("admin-token"))
                    .context("no REFEDGE_ADMIN_TOKEN and no admin-token file in the data dir")?
                    .trim()
                    .to_string(),
            };
            let server = server.unwrap_or_else(|| format!("http://{}", c.listen));
            let body = serde_json::json!({"program": program, "as_of": as_of, "dry_run": dry_run});
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (status, out) = rt.block_on(refedge::edge::client::call(
                &server,
                &token,
                "POST",
                "/api/v1/payouts/run",
                Some(&body),
            ))?;
            let text = String::from_utf8_lossy(&out);
            if !(200..300).contains(&status) {
                eprintln!("refedge: the server answered {status}: {text}");
                std::process::exit(1);
            }
            let batch: serde_json::Value = serde_json::from_slice(&out)?;
            eprintln!(
                "{} {} as of {}: {} item(s){}",
                if dry_run { "dry run of" } else { "payout" },
                batch["id"].as_str().unwrap_or("-"),
                batch["as_of"].as_str().unwrap_or("-"),
                batch["items"].as_array().map_or(0, Vec::len),
                if dry_run { ", nothing recorded" } else { "" }
            );
            println!("{}", serde_json::to_string_pretty(&batch)?);
            Ok(())
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            nats,
        } => {
            let mut flags = Vec::new();
            if let Some(n) = nats {
                flags.push(("cluster__nats_url", n));
            }
            if let Some(l) = listen {
                flags.push(("listen", l));
            }
            if let Some(d) = data_dir {
                flags.push(("data_dir", d.display().to_string()));
            }
            let config = load_with(config.as_ref(), flags);
            init_logging(&config)?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if config.workers > 0 {
                rt.worker_threads(config.workers);
            }
            rt.on_thread_start(|| {
                if let Err(error) = refedge::background::answer_promptly() {
                    tracing::debug!(%error, "request threads keep the default time slice");
                }
            });
            rt.enable_all().build()?.block_on(serve(config))
        }
    }
}

/// Logs to stderr: text (colours only on a terminal) or one JSON object a
/// line, filtered by the `log` setting.
fn init_logging(config: &Config) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .context("invalid log filter in setting `log`")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        refedge::config::LogFormat::Json => builder.json().init(),
        refedge::config::LogFormat::Text => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a stop sent the moment the address is printed is a
    // graceful stop, not the default action's kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = refedge::edge::start(config, Arc::new(SystemClock))
        .await
        .context("starting refedge")?;
    if let Some(path) = &running.admin_token_path {
        tracing::info!(path = %path.display(), "admin token file (send as Authorization: Bearer <token>)");
    }
    println!("refedge listening on http://{}", running.addr);
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    running.shutdown().await.context("flushing on shutdown")?;
    Ok(())
}
