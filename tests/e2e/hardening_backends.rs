//! The secret backends under hostile servers and rotated login secrets, through the built
//! binary: a Vault address that redirects elsewhere never sends the Vault token, an AppRole
//! secret id or the access token there (the run fails naming the redirect); a Vault token file
//! rotated on disk is picked up by the daemon at its next renewal or refusal, and a Key Vault
//! client secret file at its next login, without a SIGHUP.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use testkit::real::OpenBao;
use testkit::{
    AppRegistration, Behaviour, EntraEmulator, HostileServer, KeyVaultEmulator, KeyVaultOptions,
    TokenOptions,
};

use crate::support::{Daemon, secret_sync, wait_until};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556677";
const SECRET: &str = "Zq8~e2e.hardening.backends.client.secret";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const VAULT_TOKEN: &str = "hvs.e2e-redirect-vault-token";
const SECRET_ID: &str = "e2e-redirect-approle-secret-id";

struct World {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        World {
            entra,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// One job writing its token to `tokens/graph` on a Vault backend at `address`,
    /// logging in with `auth` (a TOML inline table).
    fn write_config(&self, address: &str, auth: &str) -> PathBuf {
        self.write_config_with(address, auth, "5m")
    }

    fn write_config_with(&self, address: &str, auth: &str, refresh_before: &str) -> PathBuf {
        let path = self.dir.path().join("secret-sync.toml");
        let text = format!(
            "[settings]\nrefresh_before = \"{refresh_before}\"\nauthority = \"{authority}\"\n\n\
             [backends.ops-vault]\nkind = \"vault\"\naddress = \"{address}\"\nmount = \"secret\"\n\
             kv_version = 2\nauth = {auth}\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{{ to = \"ops-vault\", name = \"tokens/graph\" }}]\n",
            authority = self.entra.base_url(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[tokio::test]
async fn a_vault_address_that_redirects_elsewhere_gets_no_credential_through() {
    let world = World::start().await;
    let elsewhere = HostileServer::start(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    let vault = HostileServer::start(Behaviour::redirect(307, &elsewhere.url("/v1/stolen")))
        .await
        .unwrap();
    let secret_id_file = world.dir.path().join("secret-id");
    std::fs::write(&secret_id_file, SECRET_ID).unwrap();
    for auth in [
        "{ method = \"token\", token_env = \"VAULT_TOKEN\" }".to_owned(),
        format!(
            "{{ method = \"approle\", role_id = \"role-1\", secret_id_file = \"{}\" }}",
            secret_id_file.display()
        ),
    ] {
        let config = world.write_config(&vault.base_url(), &auth);
        let config = config.display().to_string();
        let run = secret_sync(
            &["run", "--config", &config],
            &[("APP_SECRET", SECRET), ("VAULT_TOKEN", VAULT_TOKEN)],
        )
        .await;
        run.assert_code(1);
        run.assert_no_leak(&[SECRET, VAULT_TOKEN, SECRET_ID]);
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(
            output.contains(&format!("redirected to {}", elsewhere.base_url())),
            "the failure names where the redirect pointed: {output}"
        );
        assert!(output.contains("follows no redirect"), "{output}");
    }
    assert!(
        vault.request_count() > 0,
        "the configured address was asked"
    );
    let reached = elsewhere.requests();
    assert!(
        reached.is_empty(),
        "nothing may reach the redirect target, it got {reached:?}"
    );
    // and no access token was written anywhere: none was even requested past the failure
    for request in vault.requests() {
        assert!(!request.mentions("eyJ"), "{request:?}");
    }
}

/// A token with the writer policy and `ttl`, created by root.
fn create_token(bao: &OpenBao, ttl: &str) -> String {
    let created = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["writer"], "ttl": ttl, "renewable": true})),
    );
    created["auth"]["client_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_daemon_picks_up_a_vault_token_file_rotated_on_disk_without_a_reload() {
    let world = World::start().await;
    // 20 s tokens, refresh_before 10 s: the daemon writes a new token every few seconds
    world.entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(20),
        ..TokenOptions::default()
    });
    let bao = OpenBao::start();
    bao.put_policy(
        "writer",
        "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }",
    );
    let token_file = world.dir.path().join("vault-token");
    let first = create_token(&bao, "1h");
    std::fs::write(&token_file, format!("{first}\n")).unwrap();
    let config = world.write_config_with(
        &bao.address(),
        &format!(
            "{{ method = \"token\", token_file = \"{}\" }}",
            token_file.display()
        ),
        "10s",
    );
    let daemon = Daemon::spawn(
        world.dir.path().join("daemon.log"),
        &config,
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let stored = || {
        let (status, body) = bao.api_raw("GET", "secret/data/tokens/graph", None);
        (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| {
                v["data"]["data"]["access_token"]
                    .as_str()
                    .map(str::to_owned)
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), || stored().is_some()).await,
        "the first token was not written: {}",
        daemon.output()
    );

    // a Vault Agent sink: a new token on disk, the old one revoked
    let second = create_token(&bao, "1h");
    std::fs::write(&token_file, &second).unwrap();
    bao.api("POST", "auth/token/revoke", Some(json!({"token": first})));
    let before = stored();
    let rewritten = wait_until(Duration::from_secs(60), || stored() != before).await;
    let (_, _, output) = daemon.stop("TERM").await;
    assert!(
        rewritten,
        "no token was written after the token file was rotated: {output}"
    );
    for secret in [SECRET, first.as_str(), second.as_str()] {
        assert!(!output.contains(secret), "a secret leaked: {output}");
    }
}

#[tokio::test]
async fn the_daemon_picks_up_a_key_vault_client_secret_rotated_on_disk_without_a_reload() {
    const KV_CLIENT: &str = "5e6f7a8b-1111-2222-3333-444455556677";
    const OLD: &str = "Kv8~e2e.rotation.old.client.secret";
    const NEW: &str = "Kv8~e2e.rotation.new.client.secret";
    let entra = EntraEmulator::start_tls().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    entra.register_app(AppRegistration::new(TENANT, KV_CLIENT).with_secret(OLD));
    // 20 s tokens, refresh_before 10 s: a write every few seconds, and the Azure SDK asks for
    // a Key Vault token at each request (its own refresh margin is 5 minutes)
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(20),
        ..TokenOptions::default()
    });
    let kv = KeyVaultEmulator::start(
        entra.token_validator(),
        KeyVaultOptions::for_entra(&entra, TENANT),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, entra.ca_pem().unwrap()).unwrap();
    let secret_file = dir.path().join("kv-client-secret");
    std::fs::write(&secret_file, format!("{OLD}\n")).unwrap();
    let config = dir.path().join("secret-sync.toml");
    std::fs::write(
        &config,
        format!(
            "[settings]\nrefresh_before = \"10s\"\nauthority = \"{authority}\"\nca_file = \"{ca}\"\n\n\
             [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{vault}\"\nca_file = \"{ca}\"\n\
             auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", \
             client_secret = {{ file = \"{file}\" }} }}\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{{ to = \"kv\", name = \"graph-access-token\" }}]\n",
            authority = entra.base_url(),
            ca = ca.display(),
            vault = kv.vault_url(),
            file = secret_file.display(),
        ),
    )
    .unwrap();
    let daemon = Daemon::spawn(
        dir.path().join("daemon.log"),
        &config,
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let stored = || kv.secret("graph-access-token").map(|s| s.version);
    assert!(
        wait_until(Duration::from_secs(30), || stored().is_some()).await,
        "the first token was not written: {}",
        daemon.output()
    );

    // the secret is rotated: the old one no longer works, the new one is on disk
    let kv_tokens = || {
        entra
            .issued_tokens()
            .into_iter()
            .filter(|t| t.client_id == KV_CLIENT)
            .count()
    };
    std::fs::write(&secret_file, NEW).unwrap();
    entra.register_app(AppRegistration::new(TENANT, KV_CLIENT).with_secret(NEW));
    let (issued_before, version_before) = (kv_tokens(), stored());
    let logged_in_again = wait_until(Duration::from_secs(60), || kv_tokens() > issued_before).await;
    let rewritten = wait_until(Duration::from_secs(30), || stored() != version_before).await;
    let (_, _, output) = daemon.stop("TERM").await;
    assert!(
        logged_in_again && rewritten,
        "no Key Vault login with the rotated secret (logged in: {logged_in_again}, written: {rewritten}): {output}"
    );
    for secret in [SECRET, OLD, NEW] {
        assert!(!output.contains(secret), "a secret leaked: {output}");
    }
}
