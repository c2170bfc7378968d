//! Where the control plane's keyring for data at rest comes from.
//!
//! In order: `GANTRY_SECRETS_KEY` (the keys themselves, comma-separated),
//! `--secrets-key-file`, else `<data-dir>/secrets.key`, generated at first
//! start. The default keeps a database copy useless on its own; keeping the
//! key apart from the data (a file from a secret store, or the environment)
//! also protects backups of the whole data directory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gantry_pki::at_rest::SecretsKeyring;
use gantry_store::SqlStore;

/// The environment variable holding the keyring itself.
pub const SECRETS_KEY_ENV: &str = "GANTRY_SECRETS_KEY";
/// The default keyring file's name inside the data directory.
pub const DEFAULT_FILE: &str = "secrets.key";

#[derive(Debug, Clone, Default)]
pub enum SecretsKeySource {
    /// `GANTRY_SECRETS_KEY`'s value.
    Env(String),
    /// A keyring file: one base64 key per line, the current one first.
    File(PathBuf),
    /// `<data-dir>/secrets.key`, generated when missing.
    #[default]
    DataDir,
}

impl SecretsKeySource {
    /// The source the environment and an optional `--secrets-key-file` name.
    pub fn from_env(file: Option<PathBuf>) -> anyhow::Result<SecretsKeySource> {
        match (std::env::var(SECRETS_KEY_ENV).ok(), file) {
            (Some(_), Some(file)) => bail!(
                "both {SECRETS_KEY_ENV} and --secrets-key-file {} are set: keep one",
                file.display()
            ),
            (Some(keys), None) => Ok(SecretsKeySource::Env(keys)),
            (None, Some(file)) => Ok(SecretsKeySource::File(file)),
            (None, None) => Ok(SecretsKeySource::DataDir),
        }
    }

    /// Reads the keyring, generating the default file when it is missing
    /// and `generate` is set.
    pub fn load(&self, data_dir: &Path, generate: bool) -> anyhow::Result<SecretsKeyring> {
        match self {
            SecretsKeySource::Env(keys) => SecretsKeyring::parse(keys).context(SECRETS_KEY_ENV),
            SecretsKeySource::File(path) => read_file(path, "--secrets-key-file"),
            SecretsKeySource::DataDir => {
                let path = data_dir.join(DEFAULT_FILE);
                if !path.exists() {
                    if !generate {
                        bail!(
                            "{} does not exist: name the keyring with {SECRETS_KEY_ENV} or --secrets-key-file",
                            path.display()
                        );
                    }
                    generate_file(&path)?;
                }
                read_file(&path, "the default secrets key")
            }
        }
    }
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<SecretsKeyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the secrets key file is readable by other users; chmod 600 it"
        );
    }
    SecretsKeyring::parse(&text).with_context(|| format!("{what} {}", path.display()))
}

/// Writes a new one-key keyring, readable by its owner only. `create_new`
/// makes two servers starting at once agree on one key.
fn generate_file(path: &Path) -> anyhow::Result<()> {
    let key = SecretsKeyring::generate_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}: cannot create the secrets key", path.display()))?;
    writeln!(
        file,
        "# Gantry's key for secrets at rest (Terraform state, secret variables).\n\
         # Back it up apart from the database: without it they cannot be read.\n\
         # Rotation: put a new key (gantry secrets-key generate) on the first line,\n\
         # keep this one below it, restart, run `gantry secrets-key rotate`.\n{key}"
    )?;
    file.sync_all()?;
    let id = SecretsKeyring::parse(&key)?.current();
    tracing::warn!(
        path = %path.display(),
        key = %id,
        "generated the key for secrets at rest; back it up apart from the database"
    );
    Ok(())
}

/// Opens the store with the keyring from `source`: on PostgreSQL when a
/// database URL is given, else on SQLite in `data_dir`, where a server
/// (`generate`) makes the default keyring at first start.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
    source: &SecretsKeySource,
    generate: bool,
) -> anyhow::Result<SqlStore> {
    if let Some(url) = database_url {
        if matches!(source, SecretsKeySource::DataDir) {
            bail!(
                "--database-url: the secrets keyring must be the same on every replica; set \
                 {SECRETS_KEY_ENV} or --secrets-key-file (a key generated in each data directory \
                 would differ between replicas)"
            );
        }
        let keyring = source.load(data_dir, false)?;
        return SqlStore::open_postgres(url, keyring)
            .await
            .with_context(|| {
                format!(
                    "--database-url {}: cannot open the database",
                    redact_url(url)
                )
            });
    }
    let keyring = source.load(data_dir, generate)?;
    SqlStore::open_sqlite(data_dir, keyring)
        .await
        .with_context(|| {
            format!(
                "--data-dir {}: cannot open the database",
                data_dir.display()
            )
        })
}

/// A database URL fit for messages and logs: any password replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let password = if userinfo.contains(':') { ":***" } else { "" };
    let path = if rest.contains('/') {
        format!("/{path}")
    } else {
        String::new()
    };
    format!("{scheme}://{user}{password}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(
            redact_url("postgres://gantry:s3cret@db:5432/gantry?sslmode=require"),
            "postgres://gantry:***@db:5432/gantry?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://gantry@db/gantry"),
            "postgres://gantry@db/gantry"
        );
        assert_eq!(redact_url("postgres://db"), "postgres://db");
    }
}
