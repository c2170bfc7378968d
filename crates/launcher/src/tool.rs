//! Which Terraform/OpenTofu binary a stack run uses, and whether it is the
//! version the stack pins.
//!
//! The stack's `tool_path` wins. Else, when the stack pins a version and the
//! launcher has a tools directory (`GANTRY_TOOLS_DIR`) holding
//! `<tool>/<version>/<program>`, that binary. Else the program on PATH (on
//! the worker, or in the runner image). With a pinned version the phases
//! then run `<program> version -json` and compare.

use std::path::Path;

use gantry_wire::stack::StackJob;

/// The binary a run will execute, and where it came from (for the log and
/// for failure reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub program: String,
    pub origin: String,
}

pub fn resolve(job: &StackJob, tools_dir: Option<&Path>) -> Resolved {
    let name = job.tool.program();
    if let Some(path) = &job.tool_path {
        return Resolved {
            program: path.clone(),
            origin: format!("the stack's tool path {path}"),
        };
    }
    if let (Some(version), Some(dir)) = (&job.tool_version, tools_dir) {
        let candidate = dir.join(job.tool.as_str()).join(version).join(name);
        if candidate.is_file() {
            return Resolved {
                program: candidate.display().to_string(),
                origin: format!("GANTRY_TOOLS_DIR ({})", candidate.display()),
            };
        }
    }
    let origin = match (&job.tool_version, tools_dir) {
        (Some(version), Some(dir)) => format!(
            "`{name}` on PATH, as {} is missing",
            dir.join(job.tool.as_str())
                .join(version)
                .join(name)
                .display()
        ),
        _ => format!("`{name}` on PATH"),
    };
    Resolved {
        program: name.to_string(),
        origin,
    }
}

/// The version in `<program> version -json` (OpenTofu reports it under the
/// same key as Terraform).
pub fn reported_version(version_json: &[u8]) -> Result<String, String> {
    let parsed: serde_json::Value = serde_json::from_slice(version_json)
        .map_err(|e| format!("its `version -json` output is not JSON ({e})"))?;
    parsed["terraform_version"]
        .as_str()
        .map(|v| v.trim_start_matches('v').to_string())
        .ok_or_else(|| "its `version -json` output has no terraform_version".to_string())
}

/// Why the run cannot use this binary, or None when it is the pinned version.
pub fn mismatch(job: &StackJob, resolved: &Resolved, found: &str) -> Option<String> {
    let wanted = job.tool_version.as_deref()?;
    if found == wanted {
        return None;
    }
    let tool = job.tool.as_str();
    Some(format!(
        "the stack pins {tool} {wanted}, but this worker's {tool} is {found} (from {}); \
         put {tool} {wanted} at GANTRY_TOOLS_DIR/{tool}/{wanted}/{} on the worker, use a runner image \
         that has it, or change the stack's --tool-version",
        resolved.origin,
        job.tool.program()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_wire::stack::{JobPhase, Tool};

    fn job(version: Option<&str>, path: Option<&str>) -> StackJob {
        StackJob {
            stack_id: "s".into(),
            stack_name: "s".into(),
            phase: JobPhase::Plan,
            git_url: None,
            git_ref: None,
            archive: true,
            project_root: String::new(),
            tool: Tool::Terraform,
            tool_version: version.map(str::to_string),
            tool_path: path.map(str::to_string),
            hooks: Default::default(),
            state_address: String::new(),
            state_username: String::new(),
            state_password: String::new(),
            secret_env: Default::default(),
            auto_apply: false,
        }
    }

    #[test]
    fn the_tools_directory_holds_binaries_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("terraform/1.0.3/terraform");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "").unwrap();
        let found = resolve(&job(Some("1.0.3"), None), Some(dir.path()));
        assert_eq!(found.program, bin.display().to_string());
        let missing = resolve(&job(Some("1.1.0"), None), Some(dir.path()));
        assert_eq!(missing.program, "terraform");
        assert!(missing.origin.contains("1.1.0/terraform is missing"));
        let path = resolve(&job(Some("1.0.3"), Some("/opt/tf")), Some(dir.path()));
        assert_eq!(path.program, "/opt/tf");
        assert_eq!(resolve(&job(None, None), None).program, "terraform");
    }

    #[test]
    fn versions_are_compared_exactly() {
        let json = br#"{"terraform_version":"1.0.3","platform":"linux_amd64"}"#;
        assert_eq!(reported_version(json).unwrap(), "1.0.3");
        assert!(reported_version(b"Terraform v1.0.3").is_err());
        let pinned = job(Some("1.1.0"), None);
        let resolved = resolve(&pinned, None);
        let why = mismatch(&pinned, &resolved, "1.0.3").unwrap();
        assert!(
            why.contains("pins terraform 1.1.0") && why.contains("is 1.0.3"),
            "{why}"
        );
        assert_eq!(
            mismatch(&job(Some("1.0.3"), None), &resolved, "1.0.3"),
            None
        );
        assert_eq!(mismatch(&job(None, None), &resolved, "1.0.3"), None);
    }
}
