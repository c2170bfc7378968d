//! A run's log, from pipe to control plane, without blocking the run and
//! without holding it in memory.
//!
//! A [`SpoolSink`] copies the run's output (a pipe, read by a thread, or a
//! container's attach stream) into a spool file as fast as the run writes
//! it. An uploader task cuts the spool into numbered chunks (`LogChunk` seq
//! 0, 1, 2…) and PUTs each until the control plane has it.
//! Chunk boundaries are remembered, so any chunk can be sent again with the
//! same bytes: uploads are idempotent, and a dropped connection or a
//! restarted control plane costs a retry, never a lost or doubled line.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::client::{ControlPlane, RetryLog};

/// Chunks are cut at this size at most...
const MAX_CHUNK: u64 = 1024 * 1024;
/// ...and sent early once this much is waiting...
const EAGER_CHUNK: u64 = 64 * 1024;
/// ...or once output has waited this long, so `logs -f` feels live.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// What the reader thread and the uploader share.
pub struct Spool {
    written: AtomicU64,
    closed: AtomicBool,
    last_output: Mutex<Instant>,
    notify: Notify,
}

impl Spool {
    pub fn new() -> Arc<Spool> {
        Arc::new(Spool {
            written: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            last_output: Mutex::new(Instant::now()),
            notify: Notify::new(),
        })
    }

    pub fn since_last_output(&self) -> Duration {
        self.last_output.lock().expect("spool lock").elapsed()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// A spool whose writer is gone (a dead launcher's): `written` bytes,
    /// and no more will come.
    pub fn finished(written: u64) -> Arc<Spool> {
        let spool = Spool::new();
        spool.written.store(written, Ordering::Release);
        spool.close();
        spool
    }
}

/// The writing end of a spool: appends to the spool file and wakes the
/// uploader. Clones share the file (each write is appended whole, so writers
/// interleave by write, never inside one); the spool is closed when the last
/// clone is dropped. The process executor feeds it from a pipe
/// ([`spawn_reader`]), the Docker executor from the container's attach
/// stream, and the launcher adds its own lines through it.
#[derive(Clone)]
pub struct SpoolSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    file: Mutex<File>,
    spool: Arc<Spool>,
}

impl Drop for SinkInner {
    fn drop(&mut self) {
        self.spool.close();
    }
}

impl SpoolSink {
    pub fn new(file: File, spool: Arc<Spool>) -> SpoolSink {
        SpoolSink {
            inner: Arc::new(SinkInner {
                file: Mutex::new(file),
                spool,
            }),
        }
    }

    /// Appends `data` to the spool.
    pub fn append(&self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let spool = &self.inner.spool;
        self.inner
            .file
            .lock()
            .expect("spool file lock")
            .write_all(data)?;
        spool.written.fetch_add(data.len() as u64, Ordering::AcqRel);
        *spool.last_output.lock().expect("spool lock") = Instant::now();
        spool.notify.notify_one();
        Ok(())
    }

    /// Appends one line written by the launcher itself (`gantry: …`).
    pub fn line(&self, text: &str) {
        let _ = self.append(format!("gantry: {text}\n").as_bytes());
    }
}

/// Copies `pipe` into the spool until every writer has closed it.
pub fn spawn_reader(mut pipe: std::io::PipeReader, sink: SpoolSink) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if sink.append(&buffer[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// Replaces secret values with `***` in log output, in every form tools
/// print them (see [`crate::mask`]).
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    /// The secrets too short to mask safely, by name (never by value).
    warnings: Vec<String>,
}

impl Masker {
    /// `secrets` are (name, value) pairs; the names only appear in warnings.
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Masker {
        let mut masker = Masker::default();
        for (name, value) in secrets {
            masker.warnings.extend(crate::mask::weakness(&name, &value));
            masker.secrets.extend(crate::mask::forms(&value));
        }
        // Longest first, so a secret containing another is masked whole.
        masker.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        masker.secrets.dedup();
        masker
    }

    /// Writes the warnings about short secrets to the run's log and the
    /// launcher's.
    pub fn warn(&self, run_id: &str, sink: &SpoolSink) {
        for warning in &self.warnings {
            tracing::warn!(run_id, "{warning}");
            sink.line(warning);
        }
    }

    /// How much of `data` can be sent as a chunk without cutting a secret
    /// in two: everything but a tail that could be the start of a secret.
    /// (A secret that straddled a chunk boundary would be masked in neither.)
    pub fn safe_cut(&self, data: &[u8]) -> usize {
        let longest_partial = self
            .secrets
            .iter()
            .flat_map(|secret| (1..secret.len()).rev().map(move |k| &secret[..k]))
            .filter(|prefix| data.ends_with(prefix))
            .map(|prefix| prefix.len())
            .max()
            .unwrap_or(0);
        data.len() - longest_partial
    }

    pub fn mask(&self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'outer: while i < data.len() {
            for secret in &self.secrets {
                if data[i..].starts_with(secret) {
                    out.extend_from_slice(b"***");
                    i += secret.len();
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }
}

pub enum UploadError {
    /// The control plane no longer takes this lease's chunks: the worker no
    /// longer holds the run, or the upload is refused for good (a 4xx other
    /// than 401, which retrying cannot change).
    LeaseLost,
}

pub struct Uploader {
    client: Arc<ControlPlane>,
    run_id: String,
    lease_id: String,
    file: File,
    masker: Masker,
    /// (offset, length) of each chunk sent, by sequence number.
    boundaries: Vec<(u64, u64)>,
    /// The same boundaries on disk (`<spool>.chunks`, "offset length" a
    /// line), each written before its chunk is sent, so that the next
    /// launcher can finish a dead one's upload with the very same chunks.
    journal: File,
}

/// Where an uploader keeps its chunk boundaries, beside the spool.
pub fn journal_path(spool_path: &Path) -> std::path::PathBuf {
    spool_path.with_extension("chunks")
}

/// Which upload an [`Uploader`] is for: the one starting, or one a dead
/// launcher left (its journal read back, and appended to).
pub enum UploadStart {
    Fresh,
    LeftBehind,
}

impl Uploader {
    pub fn new(
        client: Arc<ControlPlane>,
        run_id: &str,
        lease_id: &str,
        spool_path: &Path,
        masker: Masker,
    ) -> std::io::Result<Uploader> {
        Uploader::open(
            client,
            run_id,
            lease_id,
            spool_path,
            masker,
            UploadStart::Fresh,
        )
    }

    /// An uploader for `spool_path`: a fresh journal, or the chunks a dead
    /// launcher cut, from its journal.
    pub fn open(
        client: Arc<ControlPlane>,
        run_id: &str,
        lease_id: &str,
        spool_path: &Path,
        masker: Masker,
        start: UploadStart,
    ) -> std::io::Result<Uploader> {
        let journal_path = journal_path(spool_path);
        let (boundaries, journal) = match start {
            UploadStart::Fresh => (Vec::new(), File::create(&journal_path)?),
            UploadStart::LeftBehind => (
                std::fs::read_to_string(&journal_path)
                    .unwrap_or_default()
                    .lines()
                    .map_while(|line| {
                        let (offset, length) = line.split_once(' ')?;
                        Some((offset.parse().ok()?, length.parse().ok()?))
                    })
                    .collect(),
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&journal_path)?,
            ),
        };
        Ok(Uploader {
            client,
            run_id: run_id.to_string(),
            lease_id: lease_id.to_string(),
            file: File::open(spool_path)?,
            masker,
            boundaries,
            journal,
        })
    }

    /// Finishes a dead launcher's upload: sends again the last chunk it cut
    /// (it may not have landed; every earlier one had, as chunks go one at a
    /// time), then the rest of the spool. Returns the number of chunks.
    pub async fn finish_left_behind(&mut self) -> Result<u64, UploadError> {
        if let Some(last) = self.boundaries.len().checked_sub(1) {
            self.send(last as u64).await?;
        }
        let written = self.file.metadata().map_or(0, |m| m.len());
        self.run(Spool::finished(written)).await
    }

    /// Uploads until the spool is closed and fully sent. Returns the number of chunks.
    pub async fn run(&mut self, spool: Arc<Spool>) -> Result<u64, UploadError> {
        let mut uploaded = self.boundaries.last().map_or(0, |(o, l)| o + l);
        let mut waiting_since = Instant::now();
        loop {
            let notified = spool.notify.notified();
            let closed = spool.closed.load(Ordering::Acquire);
            let written = spool.written.load(Ordering::Acquire);
            let ready = written.saturating_sub(uploaded);
            let due = ready >= EAGER_CHUNK || closed || waiting_since.elapsed() >= FLUSH_INTERVAL;
            if ready > 0 && due {
                let mut length = ready.min(MAX_CHUNK);
                if !(closed && length == ready) {
                    // More may follow: never end a chunk inside a secret.
                    length = self.masker.safe_cut(&self.read(uploaded, length)) as u64;
                }
                if length > 0 {
                    let seq = self.boundaries.len() as u64;
                    self.boundaries.push((uploaded, length));
                    if let Err(error) = writeln!(self.journal, "{uploaded} {length}") {
                        tracing::warn!(run_id = %self.run_id, %error, "cannot journal a log chunk");
                    }
                    self.send(seq).await?;
                    uploaded += length;
                    waiting_since = Instant::now();
                    continue;
                }
            }
            if closed {
                return Ok(self.boundaries.len() as u64);
            }
            if ready == 0 {
                waiting_since = Instant::now();
            }
            let _ = tokio::time::timeout(FLUSH_INTERVAL, notified).await;
        }
    }

    fn read(&self, offset: u64, length: u64) -> Vec<u8> {
        let mut data = vec![0u8; length as usize];
        if self.file.read_exact_at(&mut data, offset).is_err() {
            data.clear();
        }
        data
    }

    /// Sends chunk `seq` until the control plane has it.
    pub async fn send(&self, seq: u64) -> Result<(), UploadError> {
        let (offset, length) = self.boundaries[seq as usize];
        let data = self.masker.mask(&self.read(offset, length));
        let mut delay = Duration::from_millis(100);
        let mut failures = RetryLog::new("log chunk upload");
        loop {
            match self
                .client
                .put_log_chunk(&self.run_id, &self.lease_id, seq, data.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if error.is_lease_lost() => return Err(UploadError::LeaseLost),
                Err(error) if error.is_permanent() => {
                    tracing::error!(run_id = %self.run_id, seq, %error, "the control plane refused a log chunk; the rest of the log is not uploaded");
                    return Err(UploadError::LeaseLost);
                }
                Err(error) => {
                    failures.failed(&format!("run {} chunk {seq}: {error}", self.run_id));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first_and_keeps_the_rest() {
        let masker = Masker::new(
            [("A", "hunter2"), ("B", "hunter2-extra"), ("C", "ab")]
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        assert_eq!(
            masker.mask(b"pw=hunter2-extra and hunter2, ab"),
            b"pw=*** and ***, ab".to_vec()
        );
        assert_eq!(
            masker.safe_cut(b"pw=hunt"),
            3,
            "a possible secret start is held back"
        );
        assert_eq!(masker.safe_cut(b"pw=hunter2-extr"), 3);
        assert_eq!(masker.safe_cut(b"pw=hunter2!"), 11);
    }

    #[test]
    fn masks_the_json_escaped_and_base64_forms() {
        let secret = r#"s3cr"et\value"#;
        let masker = Masker::new([("S".to_string(), secret.to_string())]);
        let json = serde_json::json!({ "password": secret }).to_string();
        assert_eq!(
            masker.mask(json.as_bytes()),
            br#"{"password":"***"}"#.to_vec()
        );
        use base64::Engine;
        let header = base64::engine::general_purpose::STANDARD.encode(format!("user:{secret}"));
        let masked = String::from_utf8(masker.mask(header.as_bytes())).unwrap();
        assert!(masked.contains("***"), "{masked}");
        assert!(masker.warnings.is_empty());
        let short = Masker::new([("PIN".to_string(), "12".to_string())]);
        assert_eq!(short.mask(b"pin 12"), b"pin 12".to_vec());
        assert_eq!(short.warnings.len(), 1);
    }
}
