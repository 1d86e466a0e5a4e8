//! `calsync preferences`: show, set (from a JSON file), validate, preview and clear a
//! student's calendar preferences, and list the template variables. Validation and
//! storage are `calsync_domain::preferences`, exactly as for the HTTP API.

use std::{io::Read, path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use calsync_domain::{
    preferences::{
        self, FieldError, Preference, input,
        store::{self, PreferencesError},
        view,
    },
    templates::{self, VARIABLES},
};
use clap::{Args, Subcommand};

use crate::{
    config::{ConfigError, DatabaseConfig, DatabaseUrl},
    database::connect_migrated,
};

/// `calsync preferences`.
#[derive(Debug, Clone, Args)]
pub struct PreferencesArgs {
    #[command(subcommand)]
    pub action: PreferencesAction,
}

/// What `calsync preferences` does.
#[derive(Debug, Clone, Subcommand)]
pub enum PreferencesAction {
    /// Print a user's preference rows, the effective value of each field per kind of
    /// event, and the render warnings of the last sync.
    Show {
        user_id: i64,
        /// Print JSON (the API's format).
        #[arg(long)]
        json: bool,
    },
    /// Replace a user's preferences with those of a JSON file
    /// (`{"preferences": [...]}`; `-` reads standard input). Validated first; nothing
    /// is saved when anything is wrong.
    Set { user_id: i64, file: PathBuf },
    /// Validate a preferences JSON file (structure, values, templates) without a
    /// database.
    Validate { file: PathBuf },
    /// Print the events a sync would write now, rendered (no Google call), with the
    /// stored preferences or those of `--file`.
    Preview {
        user_id: i64,
        /// Preview these preferences instead of the stored ones (nothing is saved).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user's preferences (their events go back to the built-in look).
    Clear { user_id: i64 },
    /// List the variables and filters templates may use.
    Variables,
}

fn read_json(file: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

fn report(errors: &[FieldError]) -> ExitCode {
    eprintln!("invalid preferences:");
    for e in errors {
        eprintln!("  {e}");
    }
    ExitCode::FAILURE
}

/// Parse a file; `Err(code)` after printing the field errors.
fn parse_file(file: &PathBuf) -> anyhow::Result<Result<Vec<Preference>, ExitCode>> {
    let value = read_json(file)?;
    Ok(preferences::parse_preferences(&value).map_err(|errs| report(&errs)))
}

/// Run `calsync preferences`.
pub async fn run(
    url: Result<DatabaseUrl, ConfigError>,
    args: PreferencesArgs,
) -> anyhow::Result<ExitCode> {
    // Only the commands that read or write the database need it (and its URL).
    let pool = || async { anyhow::Ok(connect_migrated(&DatabaseConfig::cli(url?)).await?) };
    match args.action {
        PreferencesAction::Validate { file } => Ok(match parse_file(&file)? {
            Ok(prefs) => {
                println!("{}: {} valid preference rows", file.display(), prefs.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        PreferencesAction::Variables => {
            println!(
                "variables (every one is defined for every event, empty where it does not apply):"
            );
            for v in VARIABLES {
                println!("  {:<20} {}", v.name, v.meaning);
            }
            println!("filters: {}", templates::FILTERS.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        PreferencesAction::Show { user_id, json } => {
            let pool = pool().await?;
            let v = view::user_preferences(&pool, user_id).await?;
            if json {
                let mut body = input::to_json(&v.rows);
                body["user_id"] = serde_json::json!(user_id);
                body["effective"] = serde_json::json!(v.effective);
                body["render_warnings"] = serde_json::json!(v.recorded_warnings);
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(ExitCode::SUCCESS);
            }
            print_show(&v);
            Ok(ExitCode::SUCCESS)
        }
        PreferencesAction::Set { user_id, file } => {
            let prefs = match parse_file(&file)? {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let pool = pool().await?;
            match store::replace(&pool, user_id, &prefs, "cli").await {
                Ok(()) => {}
                Err(PreferencesError::Invalid(errs)) => return Ok(report(&errs)),
                Err(PreferencesError::UnknownUser(id)) => bail!("unknown user {id}"),
                Err(e) => return Err(e.into()),
            }
            println!(
                "saved {} preference rows for user {user_id}; if anything changed the user is flagged and the next nightly pass (or `calsync sync-user {user_id}`) applies them",
                prefs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        PreferencesAction::Clear { user_id } => {
            let pool = pool().await?;
            let n = match store::clear(&pool, user_id, "cli").await {
                Ok(n) => n,
                Err(PreferencesError::UnknownUser(id)) => bail!("unknown user {id}"),
                Err(e) => return Err(e.into()),
            };
            println!("deleted {n} preference rows of user {user_id}");
            Ok(ExitCode::SUCCESS)
        }
        PreferencesAction::Preview {
            user_id,
            file,
            json,
        } => {
            let replacement = match file {
                Some(file) => match parse_file(&file)? {
                    Ok(p) => Some(p),
                    Err(code) => return Ok(code),
                },
                None => None,
            };
            let pool = pool().await?;
            let p = view::preview(&pool, user_id, replacement).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(ExitCode::SUCCESS);
            }
            for e in &p.events {
                println!("{}  [{}] {}", e.id, e.kind.as_str(), e.summary);
                println!("    when:        {}", e.when);
                println!("    location:    {}", e.location);
                println!("    description: {}", e.description.replace('\n', " / "));
                println!(
                    "    color {} · reminders {} · visibility {} · {}",
                    e.color_id.map_or("calendar".to_string(), |c| c.to_string()),
                    e.reminders,
                    e.visibility,
                    e.transparency
                );
            }
            if p.events.is_empty() {
                println!("(no events)");
            }
            for w in &p.warnings {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_show(v: &view::UserPreferences) {
    println!("user {}: {} preference rows", v.user_id, v.rows.len());
    for row in &v.rows {
        println!("  {}", row.label());
        for (k, value) in input::to_json(std::slice::from_ref(row))["preferences"][0]
            .as_object()
            .into_iter()
            .flatten()
        {
            if k != "scope" && k != "course_id" && !value.is_null() {
                println!("    {k}: {value}");
            }
        }
    }
    println!("effective (outside course overrides):");
    for k in &v.effective {
        println!("  {}:", k.kind.as_str());
        for f in &k.fields {
            match (&f.value, &f.from) {
                (Some(value), Some(from)) => println!("    {:<22} {value}  (from {from})", f.field),
                _ => println!("    {:<22} built-in", f.field),
            }
        }
    }
    if v.recorded_warnings.is_empty() {
        println!("last sync: no template warnings");
    }
    for w in &v.recorded_warnings {
        println!("last sync warning: {w}");
    }
}
