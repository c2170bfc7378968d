//! The CAs a run trusts. With GANTRY_ADDITIONAL_ROOT_CAS, the launcher
//! writes one CA file, the system roots plus the bundle, and points every
//! tool a run spawns at it: Terraform and its providers (Go reads
//! `SSL_CERT_FILE`), git (`GIT_SSL_CAINFO`), curl, Python and Node. The
//! process executor hands its path on this host; the Docker executor mounts
//! it read-only at [`CONTAINER_CA_FILE`]. A variable the run sets itself
//! wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a run container sees the CA file.
pub const CONTAINER_CA_FILE: &str = "/etc/gantry/ca-certificates.pem";

/// The variables that point tools at a CA file.
pub const CA_VARIABLES: [&str; 5] = [
    "SSL_CERT_FILE",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// The system's CA file, where the common distributions keep it (the list
/// Go searches).
const SYSTEM_CA_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The file's name in the work directory.
const FILE_NAME: &str = "ca-certificates.pem";

/// Writes `<work_dir>/ca-certificates.pem`, the system roots (the
/// launcher's own `SSL_CERT_FILE`, else the distribution's file) and then
/// `extra_roots`; None when there are no extra roots (runs keep their own
/// trust store). An error names the setting.
pub fn write_ca_file(work_dir: &Path, extra_roots: &[String]) -> Result<Option<PathBuf>, String> {
    if extra_roots.is_empty() {
        return Ok(None);
    }
    let candidates = std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|f| !f.is_empty())
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(|f| f.to_string()));
    let mut system = None;
    for candidate in candidates {
        if let Ok(pem) = std::fs::read_to_string(&candidate) {
            system = Some((candidate, pem));
            break;
        }
    }
    let mut contents = match &system {
        Some((_, pem)) => pem.clone(),
        None => {
            tracing::warn!(
                searched = ?SYSTEM_CA_FILES,
                "no system CA file found: runs will trust only the CAs of GANTRY_ADDITIONAL_ROOT_CAS; \
                 install the ca-certificates package, or set SSL_CERT_FILE for the launcher"
            );
            String::new()
        }
    };
    for pem in extra_roots {
        if !contents.is_empty() && !contents.ends_with('\n') {
            contents.push('\n');
        }
        contents.push_str("# GANTRY_ADDITIONAL_ROOT_CAS\n");
        contents.push_str(pem.trim_end());
        contents.push('\n');
    }
    let path = work_dir.join(FILE_NAME);
    let written = write_readable(&path, contents.as_bytes());
    written.map_err(|e| {
        format!(
            "GANTRY_ADDITIONAL_ROOT_CAS: cannot write the CA file for runs at {}: {e}; check GANTRY_WORK_DIR",
            path.display()
        )
    })?;
    tracing::info!(
        path = %path.display(),
        system_roots = system.as_ref().map(|(f, _)| f.as_str()),
        extra_roots = extra_roots.len(),
        "runs trust the system roots and GANTRY_ADDITIONAL_ROOT_CAS (SSL_CERT_FILE, GIT_SSL_CAINFO)"
    );
    Ok(Some(path))
}

/// Writes `data` to `path` whole (a temporary file renamed over it),
/// readable by everyone: a run's user may be another than the launcher's.
fn write_readable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("pem.tmp");
    std::fs::write(&temporary, data)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, path)
}

/// Points the CA variables the run does not set itself at `file` (the
/// path the run sees).
pub fn add_ca_env(env: &mut BTreeMap<String, String>, file: &str) {
    for name in CA_VARIABLES {
        env.entry(name.to_string())
            .or_insert_with(|| file.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_holds_the_system_roots_and_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_ca_file(dir.path(), &[]).unwrap(), None);
        let extra = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_string();
        let path = write_ca_file(dir.path(), std::slice::from_ref(&extra))
            .unwrap()
            .unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.ends_with(&extra), "the bundle comes last");
        if let Some(system) = SYSTEM_CA_FILES
            .iter()
            .find_map(|f| std::fs::read_to_string(f).ok())
            .filter(|_| std::env::var_os("SSL_CERT_FILE").is_none())
        {
            assert!(written.starts_with(&system), "the system roots come first");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn the_run_s_own_ca_variables_win() {
        let mut env = BTreeMap::from([("GIT_SSL_CAINFO".to_string(), "/mine.pem".to_string())]);
        add_ca_env(&mut env, "/etc/gantry/ca-certificates.pem");
        assert_eq!(env["SSL_CERT_FILE"], "/etc/gantry/ca-certificates.pem");
        assert_eq!(env["GIT_SSL_CAINFO"], "/mine.pem");
        assert_eq!(env.len(), CA_VARIABLES.len());
    }
}
