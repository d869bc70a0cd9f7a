//! Real test servers: moto (AWS Secrets Manager) and OpenBao (the Vault API).
//!
//! Backend tests must run against the real server, not a mock of our own making, so this
//! module starts the pinned tools that `cargo xtask setup` installs into `<workspace>/.venv`.
//! Binaries are looked up in `$SECRET_SYNC_VENV/bin`, then `<workspace>/.venv/bin`, then `PATH`;
//! a missing one is a panic that says how to install it, never a silently skipped test.
//!
//! Each server listens on a free loopback port, logs to a file of its own (whose tail is in the
//! panic message when it does not come up) and is killed and reaped when its handle drops.
//! The HTTP calls made here are tiny blocking HTTP/1.0 exchanges, so the helpers work the same
//! from a plain `#[test]` and from inside a tokio test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fmt, fs};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// How long a server gets to answer its readiness probe (the machine may be busy compiling).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many fresh ports to try when a server exits early (another process took the port).
const START_ATTEMPTS: usize = 3;

/// The path of tool `name`: `$SECRET_SYNC_VENV/bin`, then `<workspace>/.venv/bin`, then `PATH`.
///
/// # Panics
/// When the tool is nowhere to be found, with the command that installs it.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(venv) = env::var_os("SECRET_SYNC_VENV").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(venv).join("bin"));
    }
    dirs.push(workspace_root().join(".venv").join("bin"));
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found (looked in $SECRET_SYNC_VENV/bin, {}, and PATH): run `cargo xtask setup`",
                workspace_root().join(".venv/bin").display()
            )
        })
}

/// The venv's Python (with boto3), for interop checks that read back what a backend wrote.
pub fn python() -> PathBuf {
    tool("python3")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running moto server, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    process: ServerProcess,
    port: u16,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    ///
    /// # Panics
    /// When `moto_server` is not installed or does not come up; the message carries its log.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Like [`Moto::start`], with extra environment for the server, e.g.
    /// `INITIAL_NO_AUTH_ACTION_COUNT=3` to check credentials (against moto's IAM) after the
    /// first three requests, which can create the IAM user and access key.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let program = tool("moto_server");
        let (process, port) = start_with_retries("moto_server", |log_dir| {
            let port = free_port();
            let mut cmd = Command::new(&program);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("HOME", log_dir)
                .envs(env.iter().copied());
            let ready = move || matches!(http(port, "GET", "/moto-api/", &[], None), Ok((200, _)));
            (cmd, port, Box::new(ready) as Box<dyn Fn() -> bool>)
        });
        Moto { process, port }
    }

    /// The endpoint to give the AWS SDK, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log file (request lines), for a test's failure message.
    pub fn log_path(&self) -> &Path {
        &self.process.log
    }
}

/// A running OpenBao dev server (in memory, unsealed, KV v2 at `secret/`), killed when dropped.
pub struct OpenBao {
    process: ServerProcess,
    port: u16,
    root_token: SecretString,
}

impl fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBao")
            .field("address", &self.address())
            .field("root_token", &"[REDACTED]")
            .field("log", &self.process.log)
            .finish()
    }
}

/// Credentials of an AppRole created by [`OpenBao::enable_approle`].
pub struct AppRoleCredentials {
    /// The role id (not a secret by itself, but only half of the login).
    pub role_id: String,
    /// The secret id.
    pub secret_id: SecretString,
}

impl fmt::Debug for AppRoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRoleCredentials")
            .field("role_id", &self.role_id)
            .field("secret_id", &"[REDACTED]")
            .finish()
    }
}

/// A JWT auth role for [`OpenBao::enable_jwt`]: who may log in, and with which policies.
#[derive(Debug, Clone)]
pub struct JwtRole<'a> {
    /// The role name the login names.
    pub role: &'a str,
    /// PEM public key that verifies the JWTs (e.g. from `rcgen::KeyPair::public_key_pem`).
    pub public_key_pem: &'a str,
    /// The `aud` the JWT must carry.
    pub bound_audience: &'a str,
    /// The `sub` the JWT must carry.
    pub bound_subject: &'a str,
    /// Policies the issued token gets.
    pub policies: &'a [&'a str],
}

impl OpenBao {
    /// Starts `bao server -dev` on a free loopback port pair (it also takes PORT+1 for its
    /// cluster listener) with a random root token, and waits until `/v1/sys/health` says ready.
    ///
    /// # Panics
    /// When `bao` is not installed or does not come up; the message carries its log.
    pub fn start() -> OpenBao {
        let program = tool("bao");
        let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let (process, port) = start_with_retries("bao", |log_dir| {
            let port = free_port_pair();
            let mut cmd = Command::new(&program);
            cmd.args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-root-token-id={root_token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", log_dir)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR");
            let ready =
                move || matches!(http(port, "GET", "/v1/sys/health", &[], None), Ok((200, _)));
            (cmd, port, Box::new(ready) as Box<dyn Fn() -> bool>)
        });
        OpenBao {
            process,
            port,
            root_token: SecretString::from(root_token),
        }
    }

    /// The address to give a Vault client, e.g. `http://127.0.0.1:40123`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The root token of this dev server.
    pub fn root_token(&self) -> &SecretString {
        &self.root_token
    }

    /// The server's log file, for a test's failure message.
    pub fn log_path(&self) -> &Path {
        &self.process.log
    }

    /// Calls the HTTP API as root: `path` is below `/v1/` (e.g. `sys/mounts/kv1`). Returns the
    /// JSON answer (`Value::Null` for an empty 204).
    ///
    /// # Panics
    /// On a transport error or a status that is not 2xx, with the status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self.api_raw(method, path, body);
        assert!(
            (200..300).contains(&status),
            "OpenBao {method} /v1/{path} answered {status}: {text}"
        );
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("OpenBao {method} /v1/{path} answered non-JSON ({e}): {text}")
            })
        }
    }

    /// Like [`OpenBao::api`], but returns the status and raw body whatever the status.
    pub fn api_raw(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let body = body.map(|b| b.to_string());
        http(
            self.port,
            method,
            &format!("/v1/{path}"),
            &[("X-Vault-Token", self.root_token.expose_secret())],
            body.as_deref(),
        )
        .unwrap_or_else(|e| panic!("OpenBao {method} /v1/{path} failed: {e}"))
    }

    /// Mounts a KV secrets engine of `version` (1 or 2) at `mount`.
    pub fn enable_kv(&self, mount: &str, version: u8) {
        self.api(
            "POST",
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        );
    }

    /// Creates or replaces ACL policy `name` with the HCL text `policy`.
    pub fn put_policy(&self, name: &str, policy: &str) {
        self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": policy })),
        );
    }

    /// Enables AppRole auth at `mount`, creates `role` with `policies`, and returns a role id
    /// and a fresh secret id for it.
    pub fn enable_approle(&self, mount: &str, role: &str, policies: &[&str]) -> AppRoleCredentials {
        self.api(
            "POST",
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "approle"})),
        );
        self.api(
            "POST",
            &format!("auth/{mount}/role/{role}"),
            Some(json!({"token_policies": policies, "token_ttl": "1h"})),
        );
        let role_id =
            self.api("GET", &format!("auth/{mount}/role/{role}/role-id"), None)["data"]["role_id"]
                .as_str()
                .expect("role-id answer has data.role_id")
                .to_owned();
        let secret_id = self.api(
            "POST",
            &format!("auth/{mount}/role/{role}/secret-id"),
            None,
        )["data"]["secret_id"]
            .as_str()
            .expect("secret-id answer has data.secret_id")
            .to_owned();
        AppRoleCredentials {
            role_id,
            secret_id: SecretString::from(secret_id),
        }
    }

    /// Enables JWT auth at `mount`, trusting `role.public_key_pem`, and creates `role.role`
    /// (user claim `sub`, bound to the given audience and subject).
    pub fn enable_jwt(&self, mount: &str, role: &JwtRole<'_>) {
        self.api(
            "POST",
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "jwt"})),
        );
        self.api(
            "POST",
            &format!("auth/{mount}/config"),
            Some(json!({"jwt_validation_pubkeys": [role.public_key_pem]})),
        );
        self.api(
            "POST",
            &format!("auth/{mount}/role/{}", role.role),
            Some(json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": [role.bound_audience],
                "bound_subject": role.bound_subject,
                "token_policies": role.policies,
                "token_ttl": "1h",
            })),
        );
    }
}

/// A child process with its log file; killed and reaped on drop, its log directory removed.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    log_dir: PathBuf,
    log: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The server may already have exited; either way reap it so no zombie or orphan stays.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.log_dir);
    }
}

type Prepared = (Command, u16, Box<dyn Fn() -> bool>);

/// Starts a server, giving it up to [`START_ATTEMPTS`] fresh ports when it exits early.
///
/// `prepare` gets the private directory for this attempt (log file, `HOME`) and returns the
/// command, its port and a readiness probe.
fn start_with_retries(
    name: &str,
    mut prepare: impl FnMut(&Path) -> Prepared,
) -> (ServerProcess, u16) {
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let log_dir = env::temp_dir().join(format!("testkit-{name}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        let log = log_dir.join(format!("{name}.log"));
        let (mut cmd, port, ready) = prepare(&log_dir);
        let out = fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .expect("a log file handle can be duplicated");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let mut process = ServerProcess {
            child,
            log_dir,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return (process, port);
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                failures.push(format!(
                    "port {port}: exited with {status}; log tail:\n{}",
                    tail(&process.log)
                ));
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}; log tail:\n{}",
                    tail(&process.log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!(
        "{name} failed to start {START_ATTEMPTS} times:\n{}",
        failures.join("\n")
    )
}

/// The last lines of a log file (or why it could not be read).
fn tail(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 works")
        .port()
}

/// A loopback port PORT such that PORT and PORT+1 were both free a moment ago.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 works");
        let port = first
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
    panic!("found no pair of adjacent free loopback ports in 100 tries")
}

/// One blocking HTTP/1.0 exchange with 127.0.0.1:`port` (HTTP/1.0, so never a chunked answer).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head}")))?;
    Ok((status, body.to_owned()))
}
