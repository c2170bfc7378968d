//! Staleness of a saved plan: the state a plan was made against (its
//! serial and lineage, in the plan file's `tfstate` entry) against the
//! stack's state now. Terraform compares the same two before applying a
//! saved plan; checking first lets the run fail with a clear reason, and
//! [`terraform_said_stale`] recognises Terraform's own verdict for a state
//! that changed between this check and `apply`.

use std::io::Read;

/// Terraform's serial and lineage of a state snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMeta {
    pub serial: i64,
    pub lineage: String,
}

impl StateMeta {
    /// No state yet: what Terraform records for an empty backend.
    pub fn empty() -> StateMeta {
        StateMeta {
            serial: 0,
            lineage: String::new(),
        }
    }

    /// From a state file (`terraform.tfstate` JSON); empty bytes are no state.
    pub fn of_state(json: &[u8]) -> Result<StateMeta, String> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(StateMeta::empty());
        }
        let parsed: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("the state is not JSON: {e}"))?;
        Ok(StateMeta {
            serial: parsed["serial"].as_i64().unwrap_or(0),
            lineage: parsed["lineage"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// The prior state recorded in a saved plan (`plan -out` writes a zip
    /// archive whose `tfstate` entry is that state).
    pub fn of_plan(plan: &[u8]) -> Result<StateMeta, String> {
        let state = zip_entry(plan, "tfstate")
            .map_err(|e| format!("cannot read the saved plan's prior state: {e}"))?;
        StateMeta::of_state(&state)
    }

    fn describe(&self) -> String {
        if self.lineage.is_empty() {
            format!("serial {}", self.serial)
        } else {
            format!("serial {}, lineage {}", self.serial, self.lineage)
        }
    }
}

/// Why a plan made against `planned` must not be applied to `current`, as
/// Terraform decides it: another lineage (when both have one), or another
/// serial.
pub fn staleness(planned: &StateMeta, current: &StateMeta) -> Option<String> {
    let other_lineage = !planned.lineage.is_empty()
        && !current.lineage.is_empty()
        && planned.lineage != current.lineage;
    if !other_lineage && planned.serial == current.serial {
        return None;
    }
    Some(format!(
        "the saved plan is stale: the stack's state changed since the plan (planned against {}, the state is now {}); \
         nothing was applied: trigger a new run to plan against the current state",
        planned.describe(),
        current.describe()
    ))
}

/// Terraform refused a saved plan because the state changed after it.
pub fn terraform_said_stale(output: &str) -> bool {
    output.contains("Saved plan is stale")
        || output.contains("Saved plan does not match the given state")
}

/// Whether an apply that failed failed only to save its state: every error
/// Terraform printed is about saving the state or releasing its lock, so
/// every change it made was made (and is in `errored.tfstate`). Terraform
/// prints no "Apply complete!" then.
pub fn only_the_state_save_failed(output: &str) -> bool {
    const SAVE_ERRORS: [&str; 3] = [
        "Error: Failed to save state",
        "Error: Failed to persist state to backend",
        "Error: Error releasing the state lock",
    ];
    let mut errors = output
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Error: "))
        .peekable();
    errors.peek().is_some() && errors.all(|line| SAVE_ERRORS.contains(&line))
}

/// The lock holder Terraform prints when it cannot acquire the state lock,
/// or None when the output shows no lock error.
pub fn lock_holder(output: &str) -> Option<String> {
    if !output.contains("Error acquiring the state lock") {
        return None;
    }
    let field = |name: &str| {
        output.lines().find_map(|line| {
            let value = line.trim().strip_prefix(name)?.trim();
            (!value.is_empty()).then(|| value.to_string())
        })
    };
    // The http backend prints `already locked: ID=<id>`; others a Lock Info block.
    let id = field("ID:").or_else(|| {
        let rest = &output[output.find("ID=")? + 3..];
        let id = rest.split_whitespace().next()?;
        Some(id.to_string())
    });
    let mut parts = Vec::new();
    if let Some(id) = id {
        parts.push(format!("lock ID {id}"));
    }
    if let Some(who) = field("Who:") {
        parts.push(format!("held by {who}"));
    }
    if let Some(operation) = field("Operation:") {
        parts.push(format!("operation {operation}"));
    }
    Some(parts.join(", "))
}

fn u16_at(data: &[u8], at: usize) -> Result<usize, String> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| "truncated zip archive".to_string())
}

fn u32_at(data: &[u8], at: usize) -> Result<usize, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| "truncated zip archive".to_string())
}

/// One entry of a zip archive (stored or deflated; no zip64, which plan
/// files never need), found through the central directory.
fn zip_entry(zip: &[u8], name: &str) -> Result<Vec<u8>, String> {
    const END: &[u8] = b"PK\x05\x06";
    const CENTRAL: &[u8] = b"PK\x01\x02";
    const LOCAL: &[u8] = b"PK\x03\x04";
    let search_from = zip.len().saturating_sub(22 + 65_535);
    let end = (search_from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..].starts_with(END))
        .ok_or("not a zip archive")?;
    let entries = u16_at(zip, end + 10)?;
    let mut at = u32_at(zip, end + 16)?;
    for _ in 0..entries {
        if !zip.get(at..).is_some_and(|d| d.starts_with(CENTRAL)) {
            return Err("corrupt zip central directory".into());
        }
        let method = u16_at(zip, at + 10)?;
        let compressed = u32_at(zip, at + 20)?;
        let name_len = u16_at(zip, at + 28)?;
        let extra_len = u16_at(zip, at + 30)?;
        let comment_len = u16_at(zip, at + 32)?;
        let local = u32_at(zip, at + 42)?;
        let entry_name = zip
            .get(at + 46..at + 46 + name_len)
            .ok_or("truncated zip archive")?;
        at += 46 + name_len + extra_len + comment_len;
        if entry_name != name.as_bytes() {
            continue;
        }
        if !zip.get(local..).is_some_and(|d| d.starts_with(LOCAL)) {
            return Err("corrupt zip local header".into());
        }
        let start = local + 30 + u16_at(zip, local + 26)? + u16_at(zip, local + 28)?;
        let data = zip
            .get(start..start + compressed)
            .ok_or("truncated zip entry")?;
        return match method {
            0 => Ok(data.to_vec()),
            8 => {
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(data)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("cannot inflate {name}: {e}"))?;
                Ok(out)
            }
            other => Err(format!("{name} uses zip compression method {other}")),
        };
    }
    Err(format!("no {name} entry"))
}

#[cfg(test)]
mod save_error_tests {
    use super::only_the_state_save_failed;

    #[test]
    fn an_apply_that_only_failed_to_save_is_told_from_one_that_failed() {
        let saved_failed = "null_resource.slow: Creation complete after 4s\n\nError: Failed to save state\n\nError saving state: ...\n\nError: Failed to persist state to backend\n\nError: Error releasing the state lock\n";
        assert!(only_the_state_save_failed(saved_failed));
        let apply_failed = "Error: Failed to save state\n\nError: local-exec provisioner error\n";
        assert!(!only_the_state_save_failed(apply_failed));
        assert!(!only_the_state_save_failed(
            "Apply complete! Resources: 1 added"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A zip with one deflated entry and one stored entry, as Go writes them
    /// (sizes in the central directory).
    fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data, deflate) in entries {
            let body = if *deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            let method: u16 = if *deflate { 8 } else { 0 };
            let offset = out.len() as u32;
            out.extend_from_slice(b"PK\x03\x04");
            out.extend_from_slice(&[20, 0, 8, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 16]); // time, date, crc and sizes (data descriptor)
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&body);
            central.extend_from_slice(b"PK\x01\x02");
            central.extend_from_slice(&[20, 0, 20, 0, 8, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 8]); // time, date, crc
            central.extend_from_slice(&(body.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let central_at = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&central_at.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_the_prior_state_of_a_plan_file() {
        let state = br#"{"version":4,"serial":7,"lineage":"abc-123","resources":[]}"#;
        let plan = zip(&[("tfplan", b"binary plan", false), ("tfstate", state, true)]);
        let meta = StateMeta::of_plan(&plan).unwrap();
        assert_eq!(meta.serial, 7);
        assert_eq!(meta.lineage, "abc-123");
        assert!(StateMeta::of_plan(b"not a zip").is_err());
        let no_state = zip(&[("tfplan", b"x", true)]);
        assert!(StateMeta::of_plan(&no_state)
            .unwrap_err()
            .contains("no tfstate"));
    }

    #[test]
    fn a_changed_serial_or_lineage_makes_the_plan_stale() {
        let meta = |serial, lineage: &str| StateMeta {
            serial,
            lineage: lineage.into(),
        };
        assert_eq!(staleness(&meta(3, "a"), &meta(3, "a")), None);
        let why = staleness(&meta(3, "a"), &meta(4, "a")).unwrap();
        assert!(why.contains("stale") && why.contains("serial 3") && why.contains("serial 4"));
        assert!(staleness(&meta(3, "a"), &meta(3, "b")).is_some());
        assert!(staleness(&StateMeta::empty(), &meta(1, "b")).is_some());
        assert_eq!(
            StateMeta::of_state(b"").unwrap(),
            StateMeta::empty(),
            "no state yet"
        );
    }

    #[test]
    fn reads_terraforms_lock_error() {
        let output = "Error: Error acquiring the state lock\n\nError message: HTTP remote state already locked: ID=admin-1\nLock Info:\n  ID:        admin-1\n  Path:      \n  Operation: maintenance\n  Who:       ops@example\n";
        let holder = lock_holder(output).unwrap();
        assert!(holder.contains("lock ID admin-1") && holder.contains("held by ops@example"));
        assert_eq!(lock_holder("Error: something else"), None);
        let http = "Error: Error acquiring the state lock\n\nError message: HTTP remote state already locked:\nID=cli-1\n\nTerraform acquires";
        assert_eq!(lock_holder(http).unwrap(), "lock ID cli-1");
        assert!(terraform_said_stale("Error: Saved plan is stale\n"));
    }
}
