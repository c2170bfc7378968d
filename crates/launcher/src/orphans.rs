//! The runs in flight, remembered on disk. If the launcher dies (SIGKILL,
//! OOM, a crash) its runs die with it; the next launcher started on the same
//! work directory reports them at registration, so they fail at once with a
//! clear reason instead of waiting out the lease timeout.

use std::fs::File;
use std::path::{Path, PathBuf};

use gantry_wire::worker::OrphanedRun;
use nix::fcntl::{Flock, FlockArg};

pub struct InFlightRuns {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl InFlightRuns {
    /// Locks the work directory: two launchers must not share one.
    pub fn open(work_dir: &Path) -> Result<InFlightRuns, String> {
        let dir = work_dir.join("in-flight");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("GANTRY_WORK_DIR: cannot create {}: {e}", dir.display()))?;
        let lock_path = work_dir.join("launcher.lock");
        let file = File::create(&lock_path).map_err(|e| {
            format!(
                "GANTRY_WORK_DIR: cannot create {}: {e}",
                lock_path.display()
            )
        })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            format!(
                "GANTRY_WORK_DIR: {} is in use by another launcher; give each launcher on a host its own work directory",
                work_dir.display()
            )
        })?;
        Ok(InFlightRuns { dir, _lock: lock })
    }

    /// The runs a previous launcher left in flight.
    pub fn left_behind(&self) -> Vec<OrphanedRun> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
                serde_json::from_str::<OrphanedRun>(&text).ok()
            })
            .collect()
    }

    pub fn remember(&self, run_id: &str, lease_id: &str) {
        let record = OrphanedRun {
            run_id: run_id.to_string(),
            lease_id: lease_id.to_string(),
        };
        let path = self.dir.join(format!("{run_id}.json"));
        if let Err(error) = std::fs::write(&path, serde_json::to_vec(&record).expect("serialises"))
        {
            tracing::warn!(%error, path = %path.display(), "cannot record the run in flight");
        }
    }

    pub fn forget(&self, run_id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{run_id}.json")));
    }
}
