//! Shared set-up: an emulator with a registered app, a client that trusts it, fixed ids and
//! secrets, and a log capture used to prove that no secret is ever printed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entra_auth::{
    AppCredential, Authority, ClientOptions, Credential, RetryPolicy, Scope, TokenClient,
};
use testkit::{AppRegistration, EntraEmulator};

pub const TENANT: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
pub const CLIENT: &str = "3b5a9c1e-7f3d-4e1a-9b2c-1d2e3f4a5b6c";
/// A client secret shaped like Entra's; it must never appear in any output.
pub const SECRET: &str = "Zx8Q~kR3v.Ly9TqsecretVALUE_never_printed";
pub const SCOPE: &str = "https://vault.azure.net/.default";
pub const RESOURCE: &str = "https://vault.azure.net";

/// Starts the emulator over HTTP or HTTPS.
pub async fn emulator(tls: bool) -> EntraEmulator {
    if tls {
        EntraEmulator::start_tls()
            .await
            .expect("emulator starts over https")
    } else {
        EntraEmulator::start()
            .await
            .expect("emulator starts over http")
    }
}

/// Starts the emulator with the test app registered with [`SECRET`].
pub async fn emulator_with_secret_app(tls: bool) -> EntraEmulator {
    let entra = emulator(tls).await;
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    entra
}

/// Fast retries so tests stay quick; the emulator's CA trusted when it serves HTTPS.
pub fn options(entra: &EntraEmulator) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(20),
        },
        extra_root_certificates: entra.ca_pem().map(String::into_bytes).into_iter().collect(),
        ..ClientOptions::default()
    }
}

pub fn client(entra: &EntraEmulator) -> TokenClient {
    TokenClient::new(options(entra)).expect("client builds")
}

pub fn authority(entra: &EntraEmulator) -> Authority {
    Authority::parse(&entra.base_url()).expect("the emulator URL is an authority")
}

pub fn app(entra: &EntraEmulator, credential: Credential) -> AppCredential {
    AppCredential {
        authority: authority(entra),
        tenant: TENANT.parse().unwrap(),
        client_id: CLIENT.parse().unwrap(),
        credential,
    }
}

pub fn secret_app(entra: &EntraEmulator) -> AppCredential {
    app(entra, Credential::ClientSecret(SECRET.into()))
}

pub fn scope() -> Scope {
    SCOPE.parse().unwrap()
}

/// Everything the crate logs while the guard lives (this thread only: tests use the
/// current-thread runtime), at TRACE level.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails, naming the value's label (not the value), if any sensitive value occurs in `text`.
pub fn assert_no_secret(text: &str, sensitive: &[(&str, &str)]) {
    for (label, value) in sensitive {
        assert!(
            !value.is_empty(),
            "{label} is empty: the check would prove nothing"
        );
        if let Some(at) = text.find(value) {
            // Show where, never the value itself (a failure message is output too).
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(120)
                .map_or(0, |(i, _)| i);
            let context = format!("{}<{label}>", &text[start..at]);
            panic!("{label} leaked into output at byte {at}, after: {context}");
        }
    }
}

/// Set in the environment of a test re-run as a child process.
const CHILD_MARKER: &str = "ENTRA_AUTH_TEST_CHILD";

/// Whether this test process is the child started by [`run_in_child`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

/// Runs the test `name` (module path, e.g. `credentials::x`) again in a child process with
/// `set` added to and `remove` taken from its environment, and asserts that it passed.
/// Environment variables cannot be set in-process: the workspace forbids `unsafe`.
pub async fn run_in_child(name: &str, set: &[(&str, String)], remove: &[&str]) {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MARKER, "1");
    for (key, value) in set {
        command.env(key, value);
    }
    for key in remove {
        command.env_remove(key);
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran {name}: {stdout}"
    );
}
