//! `calsync status`: users by sync state (and why flagged ones are not synced), jobs by
//! state, the last nightly run, and the calendar mode with its credentials' state
//! ([`crate::auth_status`]), checked with the keys found in the environment.

use std::process::ExitCode;

use calsync_domain::{queue, users};
use sqlx::PgPool;

use crate::{
    auth_status::{self, AuthStatus, KeyState, Level},
    cli::StatusArgs,
};

/// Print the status (a table, or JSON with `--json`).
pub async fn run(pool: PgPool, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let auth = auth(&pool, &args).await?;
    let users = users::counts(&pool).await?;
    let stuck = users::flagged_not_due(&pool).await?;
    let jobs = queue::job_counts(&pool).await?;
    let runs = queue::recent_nightly_runs(&pool, 1).await?;
    if args.json {
        let jobs: Vec<_> = jobs
            .iter()
            .map(|(q, s, n)| {
                serde_json::json!({
                    "queue": q, "state": s, "count": n,
                    // Finished states are counted up to queue::JOB_COUNT_CAP + 1.
                    "at_least": *n > queue::JOB_COUNT_CAP,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "users": users,
                "flagged_not_due": stuck,
                "jobs": jobs,
                "last_run": runs.first(),
                "auth": auth,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("users:            {}", users.users);
    println!("  with calendar:  {}", users.with_calendar);
    println!("  flagged:        {}", users.flagged);
    println!("  never synced:   {}", users.never_synced);
    println!("  due:            {}", users.due);
    println!("  needs re-auth:  {}", users.needs_reauth);
    println!("  calendar gone:  {}", users.calendar_missing);
    println!("  failing:        {}", users.failing);
    for line in explain_flagged_not_due(&stuck) {
        println!("{line}");
    }
    for line in describe_auth(&auth) {
        println!("{line}");
    }
    println!("jobs:");
    if jobs.is_empty() {
        println!("  (none)");
    }
    for (q, s, n) in &jobs {
        if *n > queue::JOB_COUNT_CAP {
            println!(
                "  {q:<16} {:<9} more than {}",
                s.as_str(),
                queue::JOB_COUNT_CAP
            );
        } else {
            println!("  {q:<16} {:<9} {n}", s.as_str());
        }
    }
    if let Some(run) = runs.first() {
        println!(
            "last nightly run {} ({}, {}): {} due, {} enqueued, {} succeeded, {} failed{}",
            run.id,
            run.trigger,
            run.scheduled_for,
            run.users_due,
            run.enqueued,
            run.succeeded,
            run.failed,
            if run.finished_at.is_some() {
                ", finished"
            } else {
                ", in progress"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The calendar mode's state, checked with the keys of this environment (a malformed
/// key is reported as a finding: status still shows everything else).
async fn auth(pool: &PgPool, args: &StatusArgs) -> anyhow::Result<AuthStatus> {
    let (vault, vault_error) = match args.credentials.vault() {
        Ok(v) if v.encrypts() || v.sealing_key().is_some() => (Some(v), None),
        Ok(_) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let key = KeyState::of(args.service_account.key());
    let mut auth = auth_status::status(pool, vault.as_ref(), key).await?;
    if let (Some(error), Some(oauth)) = (vault_error, auth.oauth.as_mut()) {
        oauth.findings.insert(
            0,
            auth_status::Finding {
                level: Level::Warning,
                message: format!(
                    "the credentials keys in this environment cannot be used: {error}"
                ),
            },
        );
    }
    Ok(auth)
}

/// The calendar mode section of the table.
fn describe_auth(auth: &AuthStatus) -> Vec<String> {
    let mut lines = vec![format!(
        "calendar mode:    {} (as the workers recorded it at startup)",
        auth.calendar_mode.as_str()
    )];
    if let Some(o) = &auth.oauth {
        let t = &o.refresh_tokens;
        lines.push(format!(
            "  refresh tokens: {} encrypted, {} sealed by the database, {} plain",
            t.encrypted, t.sealed, t.plain
        ));
        if !o.key_usage.is_empty() {
            let active = o.configured_keys.as_ref().and_then(|k| k.first());
            let usage: Vec<String> = o
                .key_usage
                .iter()
                .map(|u| {
                    format!(
                        "{}{}: {}",
                        u.key_id,
                        if Some(&u.key_id) == active {
                            " (active here)"
                        } else {
                            ""
                        },
                        u.refresh_tokens + u.access_tokens
                    )
                })
                .collect();
            lines.push(format!("  encrypted with:  {}", usage.join(", ")));
        }
        lines.push(format!(
            "  sealing keys:    {}",
            if o.sealing_keys.is_empty() {
                "none registered".to_string()
            } else {
                format!("{} (in use first)", o.sealing_keys.join(", "))
            }
        ));
        lines.push(format!("  needs re-auth:   {}", o.needs_reauth));
    }
    if let Some(s) = &auth.service_account {
        let p = &s.provisioning;
        lines.push(format!(
            "  service-account key: {}",
            match &s.key {
                KeyState::Readable { client_email } => format!("readable ({client_email})"),
                KeyState::Unreadable { .. } => "UNREADABLE".to_string(),
                KeyState::NotConfigured => "not configured in this environment".to_string(),
            }
        ));
        lines.push(format!(
            "  calendars owned: {} ({} not yet shared), {} deleted",
            p.active, p.not_shared, p.deleted
        ));
        lines.push(format!("  waiting for a calendar: {}", p.users_pending));
        lines.push(format!("  cleanup pending: {}", p.cleanup_pending));
    }
    for f in auth.findings() {
        let tag = match f.level {
            Level::Warning => "warning",
            Level::Note => "note",
        };
        lines.push(format!("  {tag}: {}", f.message));
    }
    lines
}

/// Why flagged users are not synced, each with what helps.
fn explain_flagged_not_due(s: &users::FlaggedNotDue) -> Vec<String> {
    let mut lines = Vec::new();
    if s.no_calendar + s.needs_reauth + s.calendar_missing + s.failing == 0 {
        return lines;
    }
    lines.push("flagged but not synced by the nightly pass:".to_string());
    if s.needs_reauth > 0 {
        lines.push(format!(
            "  {} need to sign in to Google again (their refresh token was refused); they are skipped until new credentials arrive. Dashboard: /users?status=needs_reauth",
            s.needs_reauth
        ));
    }
    if s.calendar_missing > 0 {
        lines.push(format!(
            "  {} deleted their course calendar in Google; they are skipped until users.google_course_calendar_id changes. Dashboard: /users?status=calendar_missing",
            s.calendar_missing
        ));
    }
    if s.no_calendar > 0 {
        lines.push(format!(
            "  {} have no google_course_calendar_id, so there is nothing to sync to",
            s.no_calendar
        ));
    }
    if s.failing > 0 {
        lines.push(format!(
            "  {} failed on every retry last time (still due: each pass tries again). Dashboard: /users?status=failing; the error: `calsync sync-user ID --wait`",
            s.failing
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_users_that_are_not_due_are_explained_with_a_way_out() {
        assert!(explain_flagged_not_due(&users::FlaggedNotDue::default()).is_empty());
        let lines = explain_flagged_not_due(&users::FlaggedNotDue {
            no_calendar: 1,
            needs_reauth: 2,
            calendar_missing: 3,
            failing: 4,
        })
        .join("\n");
        assert!(
            lines.contains("2 need to sign in to Google again"),
            "{lines}"
        );
        assert!(lines.contains("/users?status=needs_reauth"), "{lines}");
        assert!(lines.contains("3 deleted their course calendar"), "{lines}");
        assert!(
            lines.contains("1 have no google_course_calendar_id"),
            "{lines}"
        );
        assert!(lines.contains("4 failed on every retry"), "{lines}");
    }
}
