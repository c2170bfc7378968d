//! A launcher in a locked-down network: its own network namespace, where
//! the control plane cannot be reached directly, and an authenticating squid
//! proxy (CONNECT) as the only way out. The launcher and its runs must go
//! through the proxy.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// A network namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
}

impl Netns {
    fn create(tag: u8) -> Netns {
        let name = format!("gantry-proxy-{}-{tag}", std::process::id());
        let (host_if, ns_if) = (
            format!("gph{tag}{}", std::process::id() % 10000),
            format!("gpn{tag}{}", std::process::id() % 10000),
        );
        let host_ip = format!("10.231.{tag}.1");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                ns_if.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                host_if.clone(),
            ],
            vec!["link".into(), "set".into(), host_if.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("10.231.{tag}.2/30"),
                "dev".into(),
                ns_if.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                ns_if,
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        let netns = Netns { name, host_ip };
        for step in steps {
            let out = Command::new("ip").args(&step).output().unwrap();
            assert!(
                out.status.success(),
                "ip {step:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// squid on `ip:3128`, basic auth `gantry:proxy-pass`, allowing CONNECT anywhere.
fn start_squid(dir: &Path, ip: &str) -> Proc {
    let hash = Command::new("openssl")
        .args(["passwd", "-apr1", "proxy-pass"])
        .output()
        .unwrap();
    std::fs::write(
        dir.join("passwd"),
        format!("gantry:{}", String::from_utf8_lossy(&hash.stdout)),
    )
    .unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX", dir.to_str().unwrap()])
        .output();
    let conf = format!(
        "http_port {ip}:3128\n\
         auth_param basic program /usr/lib/squid/basic_ncsa_auth {passwd}\n\
         auth_param basic realm gantry-test\n\
         acl authenticated proxy_auth REQUIRED\n\
         http_access allow authenticated\n\
         http_access deny all\n\
         cache deny all\n\
         pid_filename {logs}/squid.pid\n\
         access_log stdio:{logs}/access.log\n\
         cache_log {logs}/cache.log\n\
         coredump_dir {logs}\n\
         shutdown_lifetime 0 seconds\n",
        passwd = dir.join("passwd").display(),
        logs = logs.display()
    );
    std::fs::write(dir.join("squid.conf"), conf).unwrap();
    let mut command = Command::new("squid");
    command.args(["-N", "-f", dir.join("squid.conf").to_str().unwrap()]);
    let proc = Proc::spawn_command(command);
    wait_for("squid to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect((ip, 3128)).ok()
    });
    proc
}

#[test]
#[ignore = "slow: network namespace and squid (~5 s)"]
fn the_launcher_and_its_runs_go_through_an_authenticating_proxy() {
    if !require_tool("squid") || !require_tool("ip") || !require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::create(7);
    let squid = start_squid(dir.path(), &netns.host_ip);
    let server = Server::start_args(&["--tls-dev"]);
    let ca = server.data_dir.join("tls/ca.pem");
    let bundle = server.cli_json(&["ca-bundle", "encode", ca.to_str().unwrap()])["bundle"]
        .as_str()
        .unwrap()
        .to_string();
    let pool = server.create_pool("behind-proxy");
    let proxy = format!("http://gantry:proxy-pass@{}:3128", netns.host_ip);

    // Inside the namespace, the control plane's address is not reachable directly.
    let port = server.port.to_string();
    let direct = Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "busybox",
            "wget",
            "-q",
            "-T",
            "2",
            "-O",
            "-",
        ])
        .arg(format!("http://127.0.0.1:{port}/api/v1/health"))
        .output()
        .unwrap();
    assert!(!direct.status.success(), "the direct route must be blocked");

    let work = dir.path().join("work");
    let mut command = Launcher::command(&pool, &work);
    let launcher_bin = command.get_program().to_owned();
    let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut inside = Command::new("ip");
    inside
        .args(["netns", "exec", &netns.name])
        .arg(launcher_bin)
        .env_clear();
    for (k, v) in envs {
        inside.env(k, v);
    }
    inside
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("GANTRY_ADDITIONAL_ROOT_CAS", &bundle);
    command = inside;
    let launcher = Launcher {
        proc: Proc::spawn_command(command),
        work_dir: work,
        _dir: None,
    };
    launcher.wait_registered();

    // A run that reaches an HTTP service on the host needs the proxy too:
    // the proxy variables reach it.
    let plain = Server::start();
    let url = format!("{}/api/v1/version", plain.url);
    let id = server.submit("behind-proxy", &["busybox", "wget", "-q", "-O", "-", &url]);
    let run = server.wait_run_end(&id, Duration::from_secs(20));
    assert_eq!(
        run["state"],
        "FINISHED",
        "{run}\n{}",
        String::from_utf8_lossy(&server.logs(&id))
    );
    assert!(String::from_utf8(server.logs(&id))
        .unwrap()
        .contains(gantry_wire::VERSION));

    // squid logs a CONNECT tunnel when it closes: stop the launcher first.
    drop(launcher);
    let access = wait_for("squid to log the tunnel", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(dir.path().join("logs/access.log")).ok()?;
        log.contains(&format!("CONNECT 127.0.0.1:{port}"))
            .then_some(log)
    });
    assert!(
        access.contains(&format!("GET {url}")),
        "the run went through the proxy:\n{access}"
    );
    assert!(
        access
            .lines()
            .filter(|l| l.contains("CONNECT"))
            .all(|l| l.contains(" gantry ")),
        "authenticated:\n{access}"
    );
    drop(squid);
}
