//! The tools (oha, nginx) and the three servers of a run: the mock upstream, nginx in front
//! of it, and sllmp in front of it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::procs::{Proc, free_port, wait_healthy};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Straight to the mock upstream.
    Direct,
    /// Through nginx's `proxy_pass`.
    Nginx,
    /// Through sllmp.
    Sllmp,
    /// Through `sllmp-bench-passthrough`: SLLMP's HTTP stack (axum + its HTTP client) forwarding
    /// bytes, without SLLMP's own code. A reference for S1 only.
    Passthrough,
}

impl Target {
    /// The three, in report order.
    pub(crate) const ALL: [Target; 3] = [Target::Direct, Target::Nginx, Target::Sllmp];

    /// The targets of S1: the three, and the stack's floor.
    pub(crate) const S1: [Target; 4] = [
        Target::Direct,
        Target::Nginx,
        Target::Sllmp,
        Target::Passthrough,
    ];

    /// Report label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::Sllmp => "sllmp",
            Target::Passthrough => "passthrough",
        }
    }

    /// The order of round `round`: rotated, so that no target always runs first.
    pub(crate) fn order(round: usize) -> [Target; 3] {
        let mut order = Target::ALL;
        order.rotate_left(round % 3);
        order
    }

    /// The order of S1's round `round`, rotated likewise.
    pub(crate) fn s1_order(round: usize) -> [Target; 4] {
        let mut order = Target::S1;
        order.rotate_left(round % 4);
        order
    }
}

/// Finds a program on `PATH` or in cargo's bin directory.
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("bin"));
    }
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `oha`, installed with `cargo install oha --locked` when missing.
pub(crate) fn ensure_oha() -> anyhow::Result<PathBuf> {
    if let Some(path) = find_program("oha") {
        return Ok(path);
    }
    eprintln!("bench: oha is missing; installing it (cargo install oha --locked, a few minutes)");
    crate::run(crate::cargo().args(["install", "oha", "--locked", "-j2"]))?;
    find_program("oha").context("oha was installed but is not on PATH nor in ~/.cargo/bin")
}

/// `nginx`, installed from Debian's packages when missing.
pub(crate) fn ensure_nginx() -> anyhow::Result<PathBuf> {
    if let Some(path) = find_program("nginx") {
        return Ok(path);
    }
    eprintln!("bench: nginx is missing; installing Debian's nginx-light");
    check_root()?;
    crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
    let light = crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if light.is_err() {
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "nginx"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    find_program("nginx").context("nginx was installed but cannot be found")
}

/// The first line a program prints about its version (stdout or stderr).
pub(crate) fn version_of(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The binaries of a run.
pub(crate) struct Bins {
    pub(crate) mock: PathBuf,
    pub(crate) proxy: PathBuf,
    pub(crate) passthrough: PathBuf,
    pub(crate) nginx: PathBuf,
}

/// The nginx configuration: a plain reverse proxy with upstream keep-alive, unbuffered so
/// SSE chunks pass as they arrive, no access log.
pub(crate) fn nginx_conf(dir: &Path, listen: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    let workers = WORKERS;
    format!(
        r#"# Written by `cargo xtask bench`: nginx as a do-nothing reverse proxy (the floor).
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    upstream mock {{
        server {upstream};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        client_max_body_size 10m;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"#
    )
}

/// The sllmp configuration: one OpenAI-compatible provider alias pointing at the mock.
pub(crate) fn sllmp_config(upstream: SocketAddr) -> String {
    format!(
        "# Written by `cargo xtask bench`.\ndefaults:\n  providers:\n    upstream: {{provider: openai, api_base: \"http://{upstream}/v1\"}}\nfeatures:\n  default: {{}}\n"
    )
}

/// The running servers.
pub(crate) struct Env {
    pub(crate) dir: PathBuf,
    pub(crate) bins: Bins,
    pub(crate) mock: Proc,
    pub(crate) mock_addr: SocketAddr,
    pub(crate) nginx: Proc,
    pub(crate) nginx_addr: SocketAddr,
    pub(crate) sllmp: Proc,
    pub(crate) sllmp_addr: SocketAddr,
    pub(crate) passthrough: Proc,
    pub(crate) passthrough_addr: SocketAddr,
    /// Time from spawn to the first successful `/health` of each sllmp started.
    pub(crate) sllmp_ready: Vec<Duration>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Worker threads (sllmp, passthrough) and worker processes (nginx): the same for every
/// proxy, so they compete on equal terms. One, because the load generator and the mock
/// upstream take the machine's other core.
pub(crate) const WORKERS: usize = 1;

impl Env {
    /// Starts the mock, nginx and sllmp, each waited for until `/health` answers.
    pub(crate) fn start(dir: &Path, bins: Bins) -> anyhow::Result<Env> {
        std::fs::create_dir_all(dir.join("nginx-tmp"))?;
        let mock_addr = loopback(free_port()?);
        let mut mock = Proc::spawn(
            "sllmp-mock-upstream",
            Command::new(&bins.mock)
                .arg("--listen")
                .arg(mock_addr.to_string()),
            &dir.join("mock.log"),
        )?;
        wait_healthy(&mut mock, mock_addr, READY_TIMEOUT)?;

        let nginx_addr = loopback(free_port()?);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, nginx_addr.port(), mock_addr))?;
        let mut nginx = Proc::spawn(
            "nginx",
            Command::new(&bins.nginx)
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("nginx-error.log"))
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"]),
            &dir.join("nginx.log"),
        )?;
        wait_healthy(&mut nginx, nginx_addr, READY_TIMEOUT)?;

        std::fs::write(dir.join("sllmp.yaml"), sllmp_config(mock_addr))?;
        let (sllmp, sllmp_addr, ready) = start_sllmp(dir, &bins.proxy)?;

        let passthrough_addr = loopback(free_port()?);
        let mut passthrough = Proc::spawn(
            "sllmp-bench-passthrough",
            Command::new(&bins.passthrough)
                .arg("--upstream")
                .arg(format!("http://{mock_addr}"))
                .arg("--listen")
                .arg(passthrough_addr.to_string())
                .args(["--workers", &WORKERS.to_string()]),
            &dir.join("passthrough.log"),
        )?;
        wait_healthy(&mut passthrough, passthrough_addr, READY_TIMEOUT)?;
        Ok(Env {
            dir: dir.to_path_buf(),
            bins,
            mock,
            mock_addr,
            nginx,
            nginx_addr,
            sllmp,
            sllmp_addr,
            passthrough,
            passthrough_addr,
            sllmp_ready: vec![ready],
        })
    }

    /// Stops sllmp and starts a fresh one (a clean memory high-water mark).
    pub(crate) fn restart_sllmp(&mut self) -> anyhow::Result<Duration> {
        self.sllmp.stop();
        let (sllmp, addr, ready) = start_sllmp(&self.dir, &self.bins.proxy)?;
        self.sllmp = sllmp;
        self.sllmp_addr = addr;
        self.sllmp_ready.push(ready);
        Ok(ready)
    }

    /// Where `target`'s requests go.
    pub(crate) fn addr(&self, target: Target) -> SocketAddr {
        match target {
            Target::Direct => self.mock_addr,
            Target::Nginx => self.nginx_addr,
            Target::Sllmp => self.sllmp_addr,
            Target::Passthrough => self.passthrough_addr,
        }
    }

    /// The chat-completions URL of `target`.
    pub(crate) fn url(&self, target: Target) -> String {
        format!("http://{}/v1/chat/completions", self.addr(target))
    }

    /// The process of the proxy of `target` (none for direct).
    pub(crate) fn proxy_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::Nginx => Some(self.nginx.pid()),
            Target::Sllmp => Some(self.sllmp.pid()),
            Target::Passthrough => Some(self.passthrough.pid()),
        }
    }

    /// Fails when a server died.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.mock.check_alive()?;
        self.nginx.check_alive()?;
        self.passthrough.check_alive()?;
        self.sllmp.check_alive()
    }
}

/// The model a request to `target` names: sllmp routes `provider:model`.
pub(crate) fn model(target: Target) -> &'static str {
    match target {
        Target::Sllmp => "upstream:gpt-4o-mini",
        _ => "gpt-4o-mini",
    }
}

fn start_sllmp(dir: &Path, proxy: &Path) -> anyhow::Result<(Proc, SocketAddr, Duration)> {
    let addr = loopback(free_port()?);
    let log = dir.join("sllmp-requests.log");
    let mut sllmp = Proc::spawn(
        "sllmp-bench-proxy",
        Command::new(proxy)
            .arg("--config")
            .arg(dir.join("sllmp.yaml"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--log-file")
            .arg(&log)
            .args(["--workers", &WORKERS.to_string()])
            .env_remove("RUST_LOG"),
        &dir.join("sllmp.log"),
    )?;
    let ready = wait_healthy(&mut sllmp, addr, READY_TIMEOUT)?;
    Ok((sllmp, addr, ready))
}

/// Fails unless running as root (apt-get and nginx's defaults need it).
pub(crate) fn check_root() -> anyhow::Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    if uid.trim() != "0" {
        bail!("installing nginx needs root; install nginx-light yourself or run as root");
    }
    Ok(())
}
