//! Stacks (one Terraform/OpenTofu root module each), the runs triggered on
//! them, their state versions, and what a launcher needs to run one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::run::RunType;

/// The hooks a stack may define, each a list of shell commands run in the
/// workspace before or after its phase.
pub const HOOKS: [&str; 6] = [
    "before_init",
    "after_init",
    "before_plan",
    "after_plan",
    "before_apply",
    "after_apply",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    #[default]
    Terraform,
    Opentofu,
}

impl Tool {
    pub const fn as_str(self) -> &'static str {
        match self {
            Tool::Terraform => "terraform",
            Tool::Opentofu => "opentofu",
        }
    }

    /// The program run when the stack names no `tool_path`.
    pub const fn program(self) -> &'static str {
        match self {
            Tool::Terraform => "terraform",
            Tool::Opentofu => "tofu",
        }
    }

    pub fn parse(s: &str) -> Option<Tool> {
        match s {
            "terraform" => Some(Tool::Terraform),
            "opentofu" | "tofu" => Some(Tool::Opentofu),
            _ => None,
        }
    }
}

/// A git URL as it may be shown (the API, logs, messages): credentials in
/// it (`https://user:token@host/repo`, `https://token@host/repo`) replaced
/// by `***`. A user name alone over ssh (`ssh://git@host/repo`, scp-like
/// `git@host:repo`) is no secret and stays.
pub fn redact_git_url(url: &str) -> String {
    match git_url_credentials(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Where the credentials of `scheme://userinfo@host/…` are in `url`: the
/// userinfo part [`redact_git_url`] hides, when it holds a secret.
pub fn git_url_credentials(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    let scheme = url[..start - 3].to_ascii_lowercase();
    let secret = url[start..at].contains(':') || scheme.starts_with("http");
    (at > start && secret).then_some((start, at))
}

/// A tool version as a stack pins it, normalised: `1.0.3`, `1.6.0-rc1`
/// (a leading `v` is dropped). `None` when it is not a version: digits
/// first, then letters, digits, `.`, `-` and `+` only (it becomes a
/// directory name under the launcher's tools directory).
pub fn normalize_tool_version(text: &str) -> Option<String> {
    let version = text.trim();
    let version = version.strip_prefix('v').unwrap_or(version);
    let valid = !version.is_empty()
        && version.len() <= 40
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    valid.then(|| version.to_string())
}

/// `POST /api/v1/stacks`. Exactly one of `git_url` and `archive` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateStack {
    pub name: String,
    /// Pool name or ID.
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// Branch, tag or commit; default `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// An uploaded directory: base64 of a `.tar.gz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// The root module's directory inside the source; default the top.
    #[serde(default)]
    pub project_root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub tool: Tool,
    /// The exact tool version runs must use, e.g. `1.0.3`: the launcher
    /// takes it from its tools directory when it has it there
    /// (`GANTRY_TOOLS_DIR/<tool>/<version>/<program>`) and fails the run in
    /// PREPARING when the tool it would run reports another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// A program to run instead of `terraform` / `tofu` on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_path: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Write-only: never returned, stored encrypted to the pool's key.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Hook name (see [`HOOKS`]) → shell commands.
    #[serde(default)]
    pub hooks: BTreeMap<String, Vec<String>>,
    /// Apply tracked and destroy runs as soon as they are planned, without
    /// waiting in UNCONFIRMED for `gantry run confirm`. Off by default.
    #[serde(default)]
    pub auto_apply: bool,
}

/// `PATCH /api/v1/stacks/{stack}`: only the fields given change. `env` and
/// `secret_env` entries are merged in; names in `unset_env` are removed
/// (plain or secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateStack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Tool>,
    /// An empty string removes the pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// Replaces the hooks named here; an empty list removes a hook.
    #[serde(default)]
    pub hooks: BTreeMap<String, Vec<String>>,
    /// See [`CreateStack::auto_apply`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_apply: Option<bool>,
}

/// A stack as the API shows it. Secret values never appear.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stack {
    pub id: String,
    pub name: String,
    pub pool_id: String,
    pub pool: String,
    /// `git` or `upload`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// SHA-256 of the uploaded archive, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    pub project_root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub tool: Tool,
    /// The pinned tool version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_path: Option<String>,
    pub labels: Vec<String>,
    /// Plain variables, with their values.
    pub env: BTreeMap<String, String>,
    /// Names of the secret variables; their values are write-only.
    pub secret_env: Vec<String>,
    pub hooks: BTreeMap<String, Vec<String>>,
    /// Tracked and destroy runs apply without waiting for a confirmation.
    pub auto_apply: bool,
    /// Serial of the latest state version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_serial: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/v1/stacks/{stack}/runs`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerRun {
    #[serde(rename = "type")]
    pub run_type: RunType,
    /// For `task` runs: the command, run in the stack's workspace after init.
    #[serde(default)]
    pub command: Vec<String>,
}

/// Resources a plan adds, changes and destroys (a replace counts as one add
/// and one destroy, as Terraform prints it), and the outputs it changes: a
/// plan that only changes outputs still has something to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanSummary {
    pub add: u32,
    pub change: u32,
    pub destroy: u32,
    /// Outputs added, changed or removed (Terraform's "Changes to Outputs").
    #[serde(default)]
    pub outputs: u32,
    /// The resources the plan changes, in Terraform's order (at most
    /// [`MAX_PLAN_RESOURCES`]); empty from launchers older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceChange>,
}

/// The most resource changes a plan summary lists.
pub const MAX_PLAN_RESOURCES: usize = 1000;

/// One resource a plan changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourceChange {
    /// e.g. `null_resource.web[0]`.
    pub address: String,
    /// `create`, `update`, `delete`, `replace` or `read`.
    pub action: String,
}

impl PlanSummary {
    /// Whether applying the plan changes anything: resources or outputs.
    pub fn has_changes(&self) -> bool {
        self.add + self.change + self.destroy + self.outputs > 0
    }
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.has_changes() {
            return f.write_str("no changes");
        }
        write!(
            f,
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )?;
        match self.outputs {
            0 => Ok(()),
            1 => f.write_str(", 1 output to change"),
            n => write!(f, ", {n} outputs to change"),
        }
    }
}

/// One output of an applied run. Sensitive values are masked (`value` null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunOutput {
    pub name: String,
    pub sensitive: bool,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

/// A stored state version (`gantry stack state versions`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateVersion {
    /// 1, 2, 3… per stack.
    pub version: i64,
    /// Terraform's own serial and lineage from the state.
    pub serial: i64,
    pub lineage: String,
    /// Resources in the state.
    pub resources: u32,
    pub sha256: String,
    /// The run that wrote it, when a run did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub created_at: String,
}

/// What a launcher needs to run a stack run; part of its lease.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackJob {
    pub stack_id: String,
    pub stack_name: String,
    /// `plan` (PREPARING → INITIALIZING → PLANNING …) or `apply` (a confirmed
    /// tracked run: the stored workspace, then `apply plan.bin`).
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The source is an uploaded archive: fetch it from the run's `source`.
    #[serde(default)]
    pub archive: bool,
    pub project_root: String,
    pub tool: Tool,
    /// The version the run must use (see [`CreateStack::tool_version`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_path: Option<String>,
    pub hooks: BTreeMap<String, Vec<String>>,
    /// The state backend's URL for this stack.
    pub state_address: String,
    /// The run's credential for the state backend (HTTP basic auth user and
    /// password); valid only for this stack, and only while this lease lives.
    pub state_username: String,
    pub state_password: String,
    /// Secret variables: name → base64 of the value sealed to the pool's
    /// public key (see `gantry_pki::envelope`). Values are masked in logs.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// A tracked or destroy run with changes applies straight after its
    /// plan instead of ending the lease as `planned` (UNCONFIRMED).
    #[serde(default)]
    pub auto_apply: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    Plan,
    Apply,
}

/// `POST /api/v1/worker/runs/{id}/plan`: what the plan phase found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReportPlan {
    pub lease_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    #[serde(default)]
    pub outputs: Vec<RunOutput>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_url_credentials_are_redacted() {
        assert_eq!(
            redact_git_url("https://user:ghp_s3cret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_git_url("https://ghp_s3cret@host/a@b"),
            "https://***@host/a@b"
        );
        assert_eq!(redact_git_url("ssh://git:pw@host/r"), "ssh://***@host/r");
        for plain in [
            "https://github.com/o/r.git",
            "git@github.com:o/r.git",
            "ssh://host/r",
            "ssh://git@host/r",
            "git://127.0.0.1:9418/repo",
        ] {
            assert_eq!(redact_git_url(plain), plain);
        }
    }

    #[test]
    fn a_plan_that_only_changes_outputs_has_changes() {
        let outputs_only = PlanSummary {
            outputs: 1,
            ..PlanSummary::default()
        };
        assert!(outputs_only.has_changes());
        assert_eq!(
            outputs_only.to_string(),
            "0 to add, 0 to change, 0 to destroy, 1 output to change"
        );
        assert!(!PlanSummary::default().has_changes());
        // Summaries stored before the field existed read as no output changes.
        let old: PlanSummary = serde_json::from_str(r#"{"add":1,"change":0,"destroy":0}"#).unwrap();
        assert_eq!((old.add, old.outputs), (1, 0));
    }

    #[test]
    fn tool_versions_are_normalised() {
        assert_eq!(normalize_tool_version("1.0.3").as_deref(), Some("1.0.3"));
        assert_eq!(
            normalize_tool_version(" v1.6.0-rc1 ").as_deref(),
            Some("1.6.0-rc1")
        );
        for bad in ["", "v", "latest", "1.0/../x", "1 0", "../1"] {
            assert_eq!(normalize_tool_version(bad), None, "{bad:?}");
        }
    }
}
