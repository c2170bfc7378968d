//! A network namespace joined to this host by a veth pair, made by a test
//! to cut the link between a launcher and its control plane.
//!
//! The pair gets a private /30 in 10.213.0.0/16: the host end (`host_ip`)
//! is where the control plane listens, the namespace end (`ns_ip`) is the
//! launcher's only address. The namespace has no other route, so nothing
//! it sends can leave the machine. A cut sets the namespace's end down:
//! the launcher's packets have no route, and the host keeps its route to
//! the pair (marked linkdown), so the control plane's replies are dropped
//! on the veth, never sent anywhere else.
//!
//! Everything is removed on drop, even when the test panics. Names come
//! from the pid and a counter, so tests may run in parallel.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    host_dev: String,
    ns_dev: String,
    pub host_ip: String,
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Whether some interface of this host already has an address in `prefix`.
fn subnet_in_use(prefix: &str) -> bool {
    Command::new("ip")
        .args(["-o", "-4", "addr", "show", "to", prefix])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(true)
}

impl Netns {
    /// A fresh namespace and veth pair; None (skip) when this host does not
    /// permit them, except under CI=true, where that is a failure.
    pub fn create() -> Option<Netns> {
        match Netns::try_create() {
            Ok(netns) => Some(netns),
            Err(error) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("network namespaces are required under CI=true (run as root, with iproute2): {error}");
                }
                eprintln!(
                    "skipping: cannot make a network namespace (needs root and iproute2): {error}"
                );
                None
            }
        }
    }

    fn try_create() -> Result<Netns, String> {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", pid % 10_000_000, n % 100);
        // A /30 picked from the pid and counter, skipping any in use.
        let start = (pid.wrapping_mul(64) + n) % (256 * 64);
        let block = (0..256 * 64)
            .map(|i| (start + i) % (256 * 64))
            .find(|b| !subnet_in_use(&format!("10.213.{}.{}/30", b / 64, (b % 64) * 4)))
            .ok_or("every /30 of 10.213.0.0/16 is in use")?;
        let (third, fourth) = (block / 64, (block % 64) * 4);
        let name = format!("gantry-f{tag}");
        // Fails if the name is taken: then nothing here is ours to remove.
        ip(&["netns", "add", &name])?;
        // From here on, Drop cleans up whatever was made.
        let netns = Netns {
            name,
            host_dev: format!("gf{tag}h"),
            ns_dev: format!("gf{tag}n"),
            host_ip: format!("10.213.{third}.{}", fourth + 1),
            ns_ip: format!("10.213.{third}.{}", fourth + 2),
        };
        let (ns, host, inner) = (&netns.name, &netns.host_dev, &netns.ns_dev);
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", inner, "netns", ns,
        ])?;
        ip(&["addr", "add", &format!("{}/30", netns.host_ip), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        netns.exec_ip(&["addr", "add", &format!("{}/30", netns.ns_ip), "dev", inner])?;
        netns.exec_ip(&["link", "set", inner, "up"])?;
        netns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Cuts the link: the namespace's end of the pair goes down.
    pub fn cut(&self) {
        self.exec_ip(&["link", "set", &self.ns_dev, "down"])
            .expect("cut the link");
    }

    /// Heals the link.
    pub fn heal(&self) {
        self.exec_ip(&["link", "set", &self.ns_dev, "up"])
            .expect("heal the link");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting either end deletes the pair; the namespace goes with its
        // last process.
        let _ = ip(&["link", "del", &self.host_dev]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
