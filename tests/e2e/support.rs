//! Shared helpers: run the binary with a clean environment and capture what it prints,
//! and assert that no secret value ever shows up in that output.

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless no given value appears in stdout or stderr.
    pub fn assert_no_leak(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(!secret.is_empty(), "an empty string cannot be scanned for");
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a secret value leaked into the output:\nstdout: {}\nstderr: {}",
                self.stdout,
                self.stderr
            );
        }
    }

    /// Stdout parsed as JSON (`--output json`); panics with both streams if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Exit 1 with every one of `needles` on stderr, no panic, and nothing on stdout (no token
    /// printed).
    pub fn assert_refused(&self, needles: &[&str]) {
        self.assert_code(1);
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "expected {needle:?} in:\n{}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert_eq!(self.stdout, "", "nothing printed as a token");
    }

    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code, expected,
            "exit code; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
    }
}

/// `secret-sync token` for the Graph scope as `client` of `tenant` against `authority`: the
/// arguments the `token` tests share; each adds its credential (and any other flag).
pub fn token_args<'a>(tenant: &'a str, client: &'a str, authority: &'a str) -> Vec<&'a str> {
    vec![
        "token",
        "--tenant-id",
        tenant,
        "--client-id",
        client,
        "--scope",
        "https://graph.microsoft.com/.default",
        "--authority",
        authority,
    ]
}

/// Runs `secret-sync ARGS` with only the given environment (plus PATH), so the developer's
/// or CI's own AZURE_* variables cannot change the outcome.
pub async fn secret_sync(args: &[&str], env: &[(&str, &str)]) -> Run {
    let vars: HashMap<&str, &str> = env.iter().copied().collect();
    let output: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-sync"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the secret-sync binary runs");
    Run {
        code: output
            .status
            .code()
            .expect("exited with a code, not a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A long-running `secret-sync` process (`daemon`, `run --watch`) whose stdout and stderr go
/// to a log file that the test reads as it grows. Killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    /// Starts `secret-sync ARGS --config CONFIG` with `RUST_LOG=info`, only PATH and `env` set,
    /// logging to `log`.
    pub fn spawn(
        log: std::path::PathBuf,
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-sync"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("the secret-sync binary starts");
        Daemon { child, log }
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the daemon is running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), pid.as_str()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until the output contains `needle`, and panics with the output if it does not.
    pub async fn wait_for_output(&self, needle: &str, within: Duration) -> String {
        let found = wait_until(within, || self.output().contains(needle)).await;
        let output = self.output();
        assert!(found, "no {needle:?} within {within:?}; output:\n{output}");
        output
    }

    /// The listener's address, from the start-up log line (`listen=ADDR`).
    pub async fn listen_addr(&self) -> String {
        let output = self
            .wait_for_output("listener bound", Duration::from_secs(20))
            .await;
        let line = output
            .lines()
            .find(|l| l.contains("listener bound"))
            .unwrap();
        let at = line.find("listen=").expect("the line names the address") + "listen=".len();
        line[at..].split_whitespace().next().unwrap().to_owned()
    }

    /// Waits for the exit (panicking after `within`) and returns the exit code.
    pub async fn exit_code(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {within:?}:\n{}", self.output()))
            .unwrap();
        status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal, not exited:\n{}", self.output()))
    }

    /// Sends `signal` and waits for the exit; returns the exit code, how long it took and the
    /// whole output.
    pub async fn stop(mut self, signal: &str) -> (i32, Duration, String) {
        let started = std::time::Instant::now();
        self.signal(signal);
        let code = self.exit_code(Duration::from_secs(40)).await;
        (code, started.elapsed(), self.output())
    }
}

/// Polls `condition` every 100 ms until it holds or `within` is over.
pub async fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1; returns the status code, the head and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head.to_owned(), body.to_owned())
}

/// The Entra emulator over HTTPS with `apps` (tenant, client, client secret) registered, and a
/// temp dir holding its CA (`ca.pem`), an `out/` dir for the file backend and the config.
#[derive(Debug)]
pub struct TlsEntra {
    pub entra: testkit::EntraEmulator,
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
}

impl TlsEntra {
    pub async fn start(apps: &[(&str, &str, &str)]) -> TlsEntra {
        let entra = testkit::EntraEmulator::start_tls().await.unwrap();
        for (tenant, client, secret) in apps {
            entra
                .register_app(testkit::AppRegistration::new(*tenant, *client).with_secret(*secret));
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, entra.ca_pem().unwrap()).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        TlsEntra { entra, dir, ca }
    }

    /// A Key Vault emulator that accepts this emulator's tokens for `tenant`.
    pub async fn key_vault(&self, tenant: &str) -> testkit::KeyVaultEmulator {
        testkit::KeyVaultEmulator::start(
            self.entra.token_validator(),
            testkit::KeyVaultOptions::for_entra(&self.entra, tenant),
        )
        .await
        .unwrap()
    }

    /// The file backend's dir.
    pub fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }

    /// Writes `text` to `secret-sync.toml` in the temp dir and returns its path.
    pub fn write_config(&self, text: &str) -> String {
        let path = self.dir.path().join("secret-sync.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// Every access token `entra` issued so far, oldest first.
pub fn issued_access_tokens(entra: &testkit::EntraEmulator) -> Vec<String> {
    use secrecy::ExposeSecret;
    entra
        .issued_tokens()
        .into_iter()
        .map(|t| t.access_token.expose_secret().to_owned())
        .collect()
}

/// What a lifecycle test must never see printed: `first` (the secret the app started with),
/// every password the emulator's app `client_id` holds or held (those rotations added), and
/// every access token issued.
pub fn app_secrets_and_tokens(
    entra: &testkit::EntraEmulator,
    client_id: &str,
    first: &str,
) -> Vec<String> {
    use secrecy::ExposeSecret;
    let mut all = vec![first.to_owned()];
    if let Some(app) = entra.application(client_id) {
        all.extend(
            app.passwords
                .iter()
                .map(|p| p.secret.expose_secret().to_owned()),
        );
    }
    all.extend(issued_access_tokens(entra));
    all
}

/// The documents of a YAML stream, parsed by PyYAML (the test servers' venv) and returned as
/// JSON; panics naming `what` (and showing `text`) if it does not parse.
pub fn yaml_documents(what: &str, text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::Stdio;
    let script = "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(sys.stdin))))";
    let mut child = std::process::Command::new(testkit::real::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} does not parse as YAML: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One request a [`RecordingServer`] received.
#[derive(Debug, Clone)]
pub struct RecordedHttp {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedHttp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records every request and answers the n-th one
/// with `statuses[n]` (the last status for every later one), an empty body and
/// `Connection: close`. For webhook receivers.
#[derive(Debug)]
pub struct RecordingServer {
    pub addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<RecordedHttp>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingServer {
    pub async fn start(statuses: &[u16]) -> RecordingServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        assert!(!statuses.is_empty());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = std::sync::Arc::clone(&requests);
        let statuses = statuses.to_vec();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let request = loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split_whitespace();
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if data.len() < end + 4 + length {
                        continue;
                    }
                    let body = data[end + 4..end + 4 + length].to_vec();
                    break Some(RecordedHttp {
                        method,
                        path,
                        headers,
                        body,
                    });
                };
                let Some(request) = request else { continue };
                let n = {
                    let mut all = recorded.lock().unwrap();
                    all.push(request);
                    all.len()
                };
                let status = statuses[(n - 1).min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        RecordingServer {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedHttp> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
