//! The `scimwatch` command line: parses arguments and dispatches. Exit codes: 0 ok,
//! 1 runtime failure, 2 bad usage or config.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use scimwatch::audit::export::{export, verify, Quarter};
use scimwatch::audit::schema::Table;
use scimwatch::audit::AuditWriter;
use scimwatch::config::{Config, ConfigError};
use scimwatch::parse::{Field, LineParser};
use scimwatch::replay::{replay, source_files, ReplayOptions};
use scimwatch::report::text;
use scimwatch::time::{parse_time, TimeFormat, Ts};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "scimwatch",
    version,
    about = "Watches SCIM provisioning: joins IdP and gateway logs, judges joiners, movers and leavers against SLOs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Judge historical logs and print a report (post-mortems, audits).
    Replay {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Read these files for the idp source instead of its configured paths.
        #[arg(long, num_args = 1..)]
        idp: Vec<PathBuf>,
        /// Read these files for the gateway source instead of its configured paths.
        #[arg(long, num_args = 1..)]
        gateway: Vec<PathBuf>,
        /// `text` for people, `json` for tools (stable keys).
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        /// The report's instant (RFC 3339); default: the newest event time.
        #[arg(long)]
        as_of: Option<String>,
        /// Also write the `operations` and `leavers` Parquet tables under this directory.
        #[arg(long)]
        parquet: Option<PathBuf>,
        /// With --parquet: rows per file (and per date) before a new file is started.
        #[arg(long, default_value_t = 1_000_000)]
        rows_per_file: usize,
    },
    /// Build a quarter's evidence pack from the Parquet store, or verify a pack.
    Export {
        /// The store: the daemon's `storage.data_dir`, or a `replay --parquet` directory.
        #[arg(long, required_unless_present = "verify")]
        data: Option<PathBuf>,
        /// The quarter, e.g. 2026Q3.
        #[arg(long, required_unless_present = "verify")]
        quarter: Option<String>,
        /// A new directory for the pack.
        #[arg(long, required_unless_present = "verify")]
        out: Option<PathBuf>,
        /// Re-check an existing pack against its manifest instead.
        #[arg(long, conflicts_with_all = ["data", "quarter", "out"])]
        verify: Option<PathBuf>,
        /// Judge the summary's statuses with this config's `[slo]` thresholds (default:
        /// design.md's 0.99 / 0.95 / 20).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print what it understood.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write realistic generated logs (for demos and benchmarks): an IdP orchestrator log and
    /// an nginx escape=json gateway log, deterministic for a seed.
    Generate {
        /// Directory to write `idp.jsonl` and `gateway.log` into.
        #[arg(long)]
        out: PathBuf,
        /// How many provisioning operations.
        #[arg(long, default_value_t = 1500)]
        operations: u64,
        /// How many distinct users.
        #[arg(long, default_value_t = 2000)]
        users: u64,
        /// Mean seconds between operations.
        #[arg(long, default_value_t = 19.0)]
        mean_gap_secs: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Leave out the injected incidents.
        #[arg(long)]
        no_trouble: bool,
    },
}

/// An error that exits 2 (usage or config) rather than 1.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path)
        .map_err(|e: ConfigError| UsageError(format!("config {}: {e}", path.display())).into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            config,
            idp,
            gateway,
            format,
            as_of,
            parquet,
            rows_per_file,
        } => run_replay(
            &config,
            idp,
            gateway,
            format,
            as_of,
            parquet.map(|dir| (dir, rows_per_file)),
        ),
        Command::CheckConfig { config } => check_config(&config),
        Command::Export {
            data,
            quarter,
            out,
            verify,
            config,
        } => match verify {
            Some(pack) => verify_pack(&pack),
            None => export_pack(data, quarter, out, config),
        },
        Command::Generate {
            out,
            operations,
            users,
            mean_gap_secs,
            seed,
            no_trouble,
        } => generate(&out, operations, users, mean_gap_secs, seed, !no_trouble),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scimwatch: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run_replay(
    config_path: &std::path::Path,
    idp: Vec<PathBuf>,
    gateway: Vec<PathBuf>,
    format: OutputFormat,
    as_of: Option<String>,
    parquet: Option<(PathBuf, usize)>,
) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let as_of = match as_of {
        Some(text) => Some(
            parse_time(&text, TimeFormat::Rfc3339)
                .map_err(|e| UsageError(format!("--as-of: {e}")))?,
        ),
        None => None,
    };
    let options = ReplayOptions {
        idp_files: idp,
        gateway_files: gateway,
        as_of,
    };
    let mut writer = match &parquet {
        Some((dir, rows_per_file)) => {
            let names = config.sources.iter().map(|s| s.name.clone()).collect();
            let now = wall_clock();
            let prefix = format!("replay-{}-{}", now.0, std::process::id());
            Some(AuditWriter::open(dir, *rows_per_file, names, prefix)?)
        }
        None => None,
    };
    let ingested_at = wall_clock();
    let (report, _) = replay(&config, &options, |output, as_of| {
        if let Some(writer) = writer.as_mut() {
            writer.add(output, ingested_at, as_of)?;
        }
        Ok(())
    })?;
    if let Some(writer) = writer.as_mut() {
        writer.flush()?;
        eprintln!(
            "wrote {} operations and {} leaver rows under {}",
            writer.rows_written(Table::Operations),
            writer.rows_written(Table::Leavers),
            parquet
                .as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let rendered = match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        }
        OutputFormat::Text => text::render(&report),
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(rendered.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the report"),
    }
}

fn check_config(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let files = source_files(&config, &ReplayOptions::default())?;
    println!("config {} is valid", config_path.display());
    println!("server: listen {}", config.server.listen);
    println!("storage: data_dir {}", config.storage.data_dir.display());
    for (index, source) in config.sources.iter().enumerate() {
        let parser = LineParser::new(source, &config.apps, index as u16)?;
        let mapped: Vec<&str> = [
            Field::Time,
            Field::CorrelationId,
            Field::Action,
            Field::App,
            Field::UserId,
            Field::UserLogin,
            Field::TargetId,
            Field::Status,
            Field::Error,
            Field::TriggerTime,
            Field::Groups,
            Field::Method,
            Field::Path,
            Field::Request,
            Field::DurationMs,
            Field::DurationSecs,
            Field::Principal,
            Field::UserName,
            Field::Location,
            Field::Body,
            Field::ResponseBody,
            Field::Event,
        ]
        .into_iter()
        .filter(|f| parser.maps(*f))
        .map(Field::name)
        .collect();
        println!(
            "source {:?}: role {}, format {}, {} file(s) match now, fields: {}",
            source.name,
            source.role.as_str(),
            source.format,
            files[index].len(),
            mapped.join(", ")
        );
    }
    let slo = &config.slo;
    println!(
        "slo: healthy >= {}, incident < {}, min {} operations, window {}s, join window {}s, standard leaver deadline {}s",
        slo.healthy_ratio, slo.incident_ratio, slo.min_operations, slo.evaluation_window_secs, slo.join_window_secs, slo.standard_disable_within_secs
    );
    for policy in &slo.high_risk {
        println!(
            "high-risk: apps {:?} users {:?} groups {:?} -> disable within {}s",
            policy.apps, policy.users, policy.groups, policy.disable_within_secs
        );
    }
    for receiver in &config.receivers {
        let kinds: Vec<&str> = [
            receiver.email.as_ref().map(|_| "email"),
            receiver.webhook.as_ref().map(|_| "webhook"),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!("receiver {:?}: {}", receiver.name, kinds.join(" + "));
    }
    for route in &config.routes {
        println!("route {:?} -> {}", route.matchers, route.receiver);
    }
    Ok(())
}

fn generate(
    out: &std::path::Path,
    operations: u64,
    users: u64,
    mean_gap_secs: f64,
    seed: u64,
    trouble: bool,
) -> anyhow::Result<()> {
    use scimwatch::demo::traffic::{generate, TrafficSpec};
    use std::io::BufWriter;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = TrafficSpec {
        seed,
        operations,
        users: users.max(1),
        mean_gap_secs,
        trouble,
        ..TrafficSpec::default()
    };
    let idp_path = out.join("idp.jsonl");
    let gateway_path = out.join("gateway.log");
    let mut idp = BufWriter::new(
        std::fs::File::create(&idp_path)
            .with_context(|| format!("creating {}", idp_path.display()))?,
    );
    let mut gateway = BufWriter::new(
        std::fs::File::create(&gateway_path)
            .with_context(|| format!("creating {}", gateway_path.display()))?,
    );
    let summary = generate(&spec, &mut idp, &mut gateway)?;
    use std::io::Write;
    idp.flush()?;
    gateway.flush()?;
    println!(
        "wrote {} operations: {} ({} lines, {} bytes), {} ({} lines, {} bytes)",
        summary.operations,
        idp_path.display(),
        summary.idp_lines,
        summary.idp_bytes,
        gateway_path.display(),
        summary.gateway_lines,
        summary.gateway_bytes
    );
    Ok(())
}

/// The wall clock, outside the core: `ingested_at` and file names only.
fn wall_clock() -> Ts {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ts(now.as_micros().min(i64::MAX as u128) as i64)
}

fn export_pack(
    data: Option<PathBuf>,
    quarter: Option<String>,
    out: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (Some(data), Some(quarter), Some(out)) = (data, quarter, out) else {
        return Err(UsageError(
            "export needs --data, --quarter and --out (or --verify DIR)".into(),
        )
        .into());
    };
    let quarter = Quarter::parse(&quarter).ok_or_else(|| {
        UsageError(format!(
            "--quarter {quarter:?} is not a quarter like 2026Q3"
        ))
    })?;
    let slo = match config {
        Some(path) => load_config(&path)?.slo,
        None => scimwatch::config::SloConfig::default(),
    };
    let manifest = export(&data, quarter, &out, &slo)?;
    println!(
        "evidence pack for {} written to {}",
        manifest.quarter,
        out.display()
    );
    for (table, entry) in &manifest.files {
        println!(
            "  {:<10} {:>8} rows  sha256 {}  {}",
            table, entry.rows, entry.sha256, entry.path
        );
    }
    let leavers = &manifest.summary.leavers;
    println!(
        "  leavers: {} episodes, {} breaches ({} high-risk)",
        leavers.episodes, leavers.breaches, leavers.high_risk_breaches
    );
    Ok(())
}

fn verify_pack(pack: &std::path::Path) -> anyhow::Result<()> {
    let problems = verify(pack)?;
    if problems.is_empty() {
        println!(
            "pack {} verified: every file matches its manifest",
            pack.display()
        );
        return Ok(());
    }
    for problem in &problems {
        println!("MISMATCH {problem}");
    }
    anyhow::bail!(
        "pack {} does not match its manifest ({} problem(s))",
        pack.display(),
        problems.len()
    )
}
