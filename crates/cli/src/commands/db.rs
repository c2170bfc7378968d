//! `gantry db`: the control plane's database, moved from SQLite to PostgreSQL.
//!
//! Works on the database directly, not through the API: the server must be
//! stopped. The database URL's password is never printed: every message
//! that could carry it goes through [`DatabaseUrl::scrub`].

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use gantry_store::sql::copy::{copy_sqlite_to_postgres, CopyError, CopyEvent, CopyReport};
use serde::Serialize;

use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

const COPY_ABOUT: &str = r#"Copy a stopped SQLite control plane into an empty PostgreSQL database, and verify the copy.

Every table of <DIR>/gantry.db goes into the PostgreSQL database (migrated first) in one
transaction, which commits only when each table's row count and SHA-256 (over its rows in
primary-key order) read back from PostgreSQL match what was read from SQLite. If anything
fails, the PostgreSQL database keeps Gantry's schema and not one row. Values encrypted at rest
are copied as they are: no secrets key is needed here, and the replicas read them with the
keyring the SQLite server used.

Before:
  1. stop `gantry server`: the copy refuses a database another process has open, and keeps
     it locked while it copies;
  2. back up the data directory and the secrets keyring (GANTRY_SECRETS_KEY,
     --secrets-key-file, or <DIR>/secrets.key);
  3. create an empty PostgreSQL database, and start no server on it before the copy.

After:
  1. start every replica with `gantry server --database-url URL` and the same keyring
     (GANTRY_SECRETS_KEY or --secrets-key-file; copy <DIR>/secrets.key if it was there);
  2. put a load balancer in front; give each replica --public-url <the load balancer's URL>
     and --trusted-proxies <its address>;
  3. point launchers and the CLI at the load balancer. Keep <DIR> as it is: your way back.
The whole move, with a load balancer configuration: docs/scaling-out.md.

The URL's password is never printed; give the URL in GANTRY_DATABASE_URL to keep it out of
the process list.

Example:
  export GANTRY_DATABASE_URL=postgres://gantry:PASSWORD@db.internal:5432/gantry
  gantry db copy --from-data-dir /var/lib/gantry

Exit codes: 0 copied and verified; 2 invalid arguments; 3 no database in --from-data-dir;
5 the SQLite database is in use, the PostgreSQL database is not empty, or the schemas differ;
6 PostgreSQL unreachable; 1 anything else (nothing was copied)."#;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy a stopped SQLite control plane into an empty PostgreSQL database, verified.
    #[command(long_about = COPY_ABOUT)]
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The stopped server's --data-dir: its gantry.db is copied (and only read).
    #[arg(long, value_name = "DIR")]
    from_data_dir: PathBuf,

    /// The empty PostgreSQL database: postgres://USER:PASSWORD@HOST:PORT/DATABASE
    /// (sslmode and other libpq parameters as query parameters).
    #[arg(
        long,
        value_name = "URL",
        env = "GANTRY_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: String,
}

#[derive(Serialize)]
struct CopyOutput<'a> {
    /// The target, its password masked.
    target: &'a str,
    #[serde(flatten)]
    report: &'a CopyReport,
    verified: bool,
}

pub async fn run(ctx: &Context, command: DbCommand) -> Result<u8, Failure> {
    let DbCommand::Copy(args) = command;
    let url = DatabaseUrl::parse(&args.database_url)?;
    let mut stderr = std::io::stderr();
    let progress = |event: CopyEvent<'_>| {
        // Progress is best effort: a closed stderr must not stop the copy.
        let _ = match event {
            CopyEvent::Copying { table } => write!(stderr, "copying {table:<20} "),
            CopyEvent::Copied { rows, .. } => writeln!(stderr, "{rows} row(s)"),
            CopyEvent::Verified(t) => writeln!(
                stderr,
                "verified {:<19} {} row(s), sha256 {}…, {}",
                t.table,
                t.target_rows,
                &t.target_sha256[..12],
                if t.ok { "ok" } else { "MISMATCH" }
            ),
        };
    };
    let _ = writeln!(
        std::io::stderr(),
        "copying {} into {}",
        args.from_data_dir.join("gantry.db").display(),
        url.shown
    );
    let report = copy_sqlite_to_postgres(&args.from_data_dir, url.raw, progress)
        .await
        .map_err(|e| failure(&url, e))?;

    if ctx.json() {
        json(&CopyOutput {
            target: &url.shown,
            report: &report,
            verified: true,
        });
        return Ok(exit::OK);
    }
    let rows = report
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.target_rows.to_string(),
                t.target_sha256[..16].to_string(),
                if t.ok { "ok" } else { "MISMATCH" }.to_string(),
            ]
        })
        .collect();
    table(&["TABLE", "ROWS", "SHA256", "CHECK"], rows, None);
    println!(
        "\nCopied and verified {} row(s) from {} into {}.",
        report.rows,
        report.source.display(),
        url.shown
    );
    for sequence in &report.sequences {
        println!("{} continues at {}.", sequence.column, sequence.next_value);
    }
    println!(
        "\nNext: start each replica with `gantry server --database-url` and the same secrets keyring,\n\
         behind a load balancer named by --public-url; keep {} as it is (your way back).\n\
         See docs/scaling-out.md.",
        args.from_data_dir.display()
    );
    Ok(exit::OK)
}

fn failure(url: &DatabaseUrl, error: CopyError) -> Failure {
    let code = match &error {
        CopyError::SourceMissing(_) => exit::NOT_FOUND,
        CopyError::SourceInUse(_) | CopyError::SourceSchema { .. } => exit::CONFLICT,
        CopyError::TargetNotEmpty(_) => exit::CONFLICT,
        CopyError::TargetUnreachable(_) => exit::UNREACHABLE,
        CopyError::Mismatch(_) | CopyError::Database(_) => exit::ERROR,
    };
    let message = match &error {
        CopyError::TargetUnreachable(_) => format!("{error} ({})", url.shown),
        _ => error.to_string(),
    };
    Failure::new(code, url.scrub(&message))
}

/// The database URL, and what of it must never be printed.
struct DatabaseUrl<'a> {
    raw: &'a str,
    /// The URL with its password replaced by `***`.
    shown: String,
    /// The password as written and decoded, from the user part or a
    /// `password=` parameter.
    secrets: Vec<String>,
}

impl<'a> DatabaseUrl<'a> {
    fn parse(raw: &'a str) -> Result<DatabaseUrl<'a>, Failure> {
        let usage = |problem: &str| {
            Failure::new(
                exit::USAGE,
                format!(
                    "--database-url (or GANTRY_DATABASE_URL): {problem}; expected \
                     postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ),
            )
        };
        // The parse error is not shown: it could quote the password.
        let mut url = url::Url::parse(raw).map_err(|_| usage("not a URL"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(usage(&format!(
                "the scheme is {}, not postgres",
                url.scheme()
            )));
        }
        let mut secrets = Vec::new();
        if let Some(password) = url.password().map(str::to_string) {
            secrets.push(decode(&password));
            secrets.push(password);
            url.set_password(Some("***"))
                .expect("a URL with a password can have another");
        }
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if pairs.iter().any(|(k, _)| k == "password") {
            let mut query = url.query_pairs_mut();
            query.clear();
            for (key, value) in &pairs {
                if key == "password" {
                    secrets.push(value.clone());
                    query.append_pair(key, "***");
                } else {
                    query.append_pair(key, value);
                }
            }
        }
        if let Some(query) = raw.split_once('?').map(|(_, q)| q) {
            // The parameter as written, percent-encoded or not.
            secrets.extend(
                query
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix("password="))
                    .map(str::to_string),
            );
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first: a password containing another's text is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(DatabaseUrl {
            raw,
            shown: url.to_string(),
            secrets,
        })
    }

    /// `message` with the URL masked and every form of its password replaced.
    fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(self.raw, &self.shown);
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked_in_the_url_and_in_messages() {
        let url =
            DatabaseUrl::parse("postgres://gantry:p%40ss-w0rd@db:5432/gantry?sslmode=require")
                .unwrap();
        assert_eq!(
            url.shown,
            "postgres://gantry:***@db:5432/gantry?sslmode=require"
        );
        let message = url.scrub(
            "failed for postgres://gantry:p%40ss-w0rd@db:5432/gantry?sslmode=require: p@ss-w0rd",
        );
        assert!(
            !message.contains("p%40ss") && !message.contains("p@ss"),
            "{message}"
        );
        assert!(message.contains("gantry:***@db"), "{message}");
    }

    #[test]
    fn a_password_parameter_is_masked_too() {
        let url = DatabaseUrl::parse("postgresql://db/gantry?user=g&password=hunter%2B2").unwrap();
        assert!(!url.shown.contains("hunter"), "{}", url.shown);
        assert!(url.shown.contains("password=***") || url.shown.contains("password=%2A%2A%2A"));
        assert_eq!(url.scrub("x hunter+2 hunter%2B2 y"), "x *** *** y");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_echoing_it() {
        for bad in [
            "sqlite://secret-pw",
            "not a url secret-pw",
            "mysql://u:secret-pw@h/d",
        ] {
            let failure = DatabaseUrl::parse(bad).err().unwrap();
            assert_eq!(failure.code, exit::USAGE);
            assert!(
                !failure.message.contains("secret-pw"),
                "{}",
                failure.message
            );
        }
    }
}
