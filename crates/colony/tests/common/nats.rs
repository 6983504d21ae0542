//! A JetStream cluster of real `nats-server` processes on loopback, started by the
//! tests themselves (the server from the tests' Python environment, see
//! `tools::nats_server`), and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (the listener is closed before the port is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    child: Option<Child>,
    config: PathBuf,
    /// Whether it requires TLS of clients.
    tls: bool,
    /// The cores its Go runtime may run on at once (`GOMAXPROCS`), when not all of
    /// the machine's.
    cores: Option<usize>,
}

impl NatsServer {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again, after [`NatsServer::kill`]) on its own port and store.
    pub fn start(&mut self) {
        let mut command = Command::new(super::tools::nats_server());
        if let Some(cores) = self.cores {
            command.env("GOMAXPROCS", cores.to_string());
        }
        let child = command
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }
}

/// Three (or `n`) servers in one JetStream cluster.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
    /// One cluster at a time in a test process: two starting at once race for the
    /// free ports they pick, and starve each other's leader elections on two cores.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a secured cluster's servers require of clients: TLS with a certificate a
/// test CA signed, and a user and password.
pub struct Secure {
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
    _ca: super::tools::TestCa,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Secure {
    /// A test CA, a server certificate for 127.0.0.1 it signed, and a user.
    pub fn new() -> Secure {
        let ca = super::tools::test_ca();
        Secure {
            ca_file: ca.ca_file.clone(),
            cert_file: ca.cert_file.clone(),
            key_file: ca.key_file.clone(),
            user: "colony".into(),
            password: "a-secret-for-the-test".into(),
            _ca: ca,
        }
    }

    fn server_config(&self) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n}}\n\
             authorization {{\n  user: \"{}\"\n  password: \"{}\"\n}}\n",
            self.cert_file.display(),
            self.key_file.display(),
            self.ca_file.display(),
            self.user,
            self.password
        )
    }
}

impl Default for Secure {
    fn default() -> Self {
        Secure::new()
    }
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, None, None)
    }

    /// Servers that share the machine's cores, as servers on machines of their own
    /// would not: each runs its Go runtime on its share of them (`GOMAXPROCS`, at
    /// least 1), so that the `n` runtimes do not each schedule over every core.
    pub fn start_sharing_cores(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, None, Some(NatsCluster::share_of_cores(n)))
    }

    /// Each of `n` servers' share of this machine's cores.
    pub fn share_of_cores(n: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / n.max(1)).max(1)
    }

    /// Servers that require TLS and a user and password of every client.
    pub fn start_secure(n: usize, secure: &Secure) -> NatsCluster {
        NatsCluster::start_with(n, Some(secure), None)
    }

    fn start_with(n: usize, secure: Option<&Secure>, cores: Option<usize>) -> NatsCluster {
        let one_at_a_time = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let port = free_port();
            let monitor = free_port();
            let others: Vec<String> = routes
                .iter()
                .filter(|other| *other != route)
                .map(|other| format!("\"nats-route://127.0.0.1:{other}\""))
                .collect();
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "{}server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\nmax_payload: 8MB\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n\
                     cluster {{\n  name: colony-tests\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                    secure.map(Secure::server_config).unwrap_or_default(),
                    store.display(),
                    others.join(", ")
                ),
            )
            .unwrap();
            let mut server = NatsServer {
                name,
                port,
                monitor,
                child: None,
                config,
                tls: secure.is_some(),
                cores,
            };
            server.start();
            servers.push(server);
        }
        let cluster = NatsCluster {
            servers,
            _dir: dir,
            _one_at_a_time: one_at_a_time,
        };
        cluster.wait_healthy();
        cluster
    }

    /// The servers' URLs, comma-separated (as `--cluster` takes them).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits (at most 60 s) until every server's JetStream is healthy: routes up, a
    /// meta leader elected.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for server in &self.servers {
            loop {
                if healthz(server.monitor) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not become healthy within 60 s",
                    server.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}

/// `GET /healthz` on a server's monitoring port answers 200.
fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
