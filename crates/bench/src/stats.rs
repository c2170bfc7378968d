//! Percentiles, clocks and /proc readings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// Milliseconds since the Unix epoch, with sub-millisecond precision.
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// An RFC 3339 timestamp (as in run transitions) in milliseconds since the epoch.
pub fn rfc3339_ms(text: &str) -> Result<f64> {
    let time = humantime::parse_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 timestamp"))?;
    Ok(time.duration_since(UNIX_EPOCH)?.as_secs_f64() * 1000.0)
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentiles.
pub fn summarize(values: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    Summary {
        n: sorted.len(),
        min: sorted[0],
        p50: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// What /proc/<pid>/status and /proc/<pid>/fd say about a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStatus {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
    pub fds: u64,
}

pub fn proc_status(pid: u32) -> Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(ProcStatus {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        threads: field("Threads:"),
        fds,
    })
}

/// Resident memory of a process and all its descendants, in kB: a worker
/// that keeps helper processes pays for them too.
pub fn tree_rss_kb(pid: u32) -> Result<u64> {
    // Parent of every process, from /proc/<pid>/stat (field 4, after the ')').
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let parent = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(parent) = parent {
            parents.push((child, parent));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    let mut total = proc_status(pid)?.rss_kb;
    for child in &tree[1..] {
        // A child may end meanwhile: it then holds no memory.
        total += proc_status(*child).map(|s| s.rss_kb).unwrap_or(0);
    }
    Ok(total)
}

/// utime + stime of a process, in seconds. `pid` None is this process.
pub fn cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of proc(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// Measures a process's CPU use over a span of wall time.
pub struct CpuMeter {
    pid: Option<u32>,
    cpu: f64,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            cpu: cpu_seconds(pid)?,
            at: std::time::Instant::now(),
        })
    }

    /// (CPU seconds used, wall seconds elapsed) since start.
    pub fn read(&self) -> Result<(f64, f64)> {
        Ok((
            cpu_seconds(self.pid)? - self.cpu,
            self.at.elapsed().as_secs_f64(),
        ))
    }

    /// Average use since start, in percent of one core.
    pub fn percent(&self) -> Result<f64> {
        let (cpu, wall) = self.read()?;
        Ok(100.0 * cpu / wall.max(1e-9))
    }
}

/// Per thread of `pid`, by thread ID: its name, CPU seconds, and seconds
/// spent runnable but waiting for a CPU (schedstat).
fn thread_times(pid: u32) -> BTreeMap<u64, (String, f64, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let waited_ns: f64 = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(1).and_then(|w| w.parse().ok()))
            .unwrap_or(0.0);
        threads.insert(
            tid,
            (
                text[open + 1..close].to_string(),
                ticks as f64 / clock_ticks(),
                waited_ns / 1e9,
            ),
        );
    }
    threads
}

/// Each thread's state letter (R running or runnable, S sleeping, D disk wait).
fn thread_states(pid: u32) -> Vec<(u64, char)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse::<u64>().ok()?;
            let text = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let state = text[text.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .chars()
                .next()?;
            Some((tid, state))
        })
        .collect()
}

/// `(write_bytes, syscw)` from /proc/<pid>/io.
fn io_counters(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("syscw:"))
}

/// Watches a process's threads over a span: CPU, time waiting for a CPU,
/// time in disk wait (sampled every 20 ms), and its disk writes. Tells a
/// starved or I/O-bound server from a busy one.
pub struct ThreadWatch {
    pid: u32,
    before: BTreeMap<u64, (String, f64, f64)>,
    io: (u64, u64),
    at: std::time::Instant,
    samples: Arc<Mutex<BTreeMap<u64, [u64; 3]>>>,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ThreadWatch {
    /// Starts watching; sampling stops by itself after `limit`.
    pub fn start(pid: u32, limit: Duration) -> ThreadWatch {
        let samples = Arc::new(Mutex::new(BTreeMap::<u64, [u64; 3]>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (samples, stop) = (samples.clone(), stop.clone());
            tokio::spawn(async move {
                let rounds = (limit.as_millis() / 20).max(1);
                for _ in 0..rounds {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    {
                        let mut samples = samples.lock().expect("samples lock");
                        for (tid, state) in thread_states(pid) {
                            let counts = samples.entry(tid).or_insert([0; 3]);
                            counts[0] += 1;
                            counts[1] += u64::from(state == 'R');
                            counts[2] += u64::from(state == 'D');
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        ThreadWatch {
            pid,
            before: thread_times(pid),
            io: io_counters(pid),
            at: std::time::Instant::now(),
            samples,
            stop,
            sampler,
        }
    }

    /// "name: cpu 40%, waiting for a CPU 12%, disk wait 0%; …" for the four
    /// busiest threads, then the disk writes.
    pub async fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sampler.await;
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let after = thread_times(self.pid);
        let io = io_counters(self.pid);
        let samples = self.samples.lock().expect("samples lock");
        let mut threads: Vec<(&str, f64, f64, f64)> = after
            .iter()
            .map(|(tid, (name, cpu, waited))| {
                let (cpu0, waited0) = self
                    .before
                    .get(tid)
                    .map(|b| (b.1, b.2))
                    .unwrap_or((0.0, 0.0));
                let disk = samples
                    .get(tid)
                    .map(|c| c[2] as f64 / c[0].max(1) as f64)
                    .unwrap_or(0.0);
                (
                    name.as_str(),
                    (cpu - cpu0) / wall,
                    (waited - waited0) / wall,
                    disk,
                )
            })
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut text: Vec<String> = threads
            .iter()
            .take(4)
            .map(|(name, cpu, waited, disk)| {
                format!(
                    "{name}: cpu {:.0}%, waiting for a CPU {:.0}%, disk wait {:.0}%",
                    cpu * 100.0,
                    waited * 100.0,
                    disk * 100.0
                )
            })
            .collect();
        text.push(format!(
            "disk writes {:.1} MB/s in {:.0} write calls/s",
            io.0.saturating_sub(self.io.0) as f64 / wall / 1e6,
            io.1.saturating_sub(self.io.1) as f64 / wall
        ));
        text.join("; ")
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Raises this process's open-file soft limit to the hard limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            getrlimit(Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(hard)
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&values);
        assert_eq!((s.p50, s.p99, s.max, s.min), (50.0, 99.0, 100.0, 1.0));
        assert_eq!(summarize(&[7.0]).p99, 7.0);
        assert_eq!(summarize(&[]).n, 0);
    }

    #[test]
    fn parses_transition_timestamps() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.250Z").unwrap(), 1250.0);
    }

    #[test]
    fn reads_own_cpu_and_memory() {
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(proc_status(std::process::id()).unwrap().rss_kb > 0);
    }
}
