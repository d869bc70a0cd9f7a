//! One whole run per Azure cloud (public, US Government, China), through the built binary: the
//! job's federated assertion carries that cloud's audience, the Key Vault backend meets that
//! cloud's challenge and asks for that cloud's Key Vault resource, and the job's Graph scope is
//! that cloud's Graph. A cloud's real hosts cannot resolve to 127.0.0.1 here, so the authority
//! and the vault are the emulators on 127.0.0.1, and `[settings] cloud` says which cloud they
//! stand for (as it does for a proxy in front of a national cloud); how a bare vault name maps
//! to each cloud's host is unit-tested in secret-backends. The emulators refuse what the cloud
//! would: a federated assertion with another cloud's audience (AADSTS700212), a token for
//! another cloud's vault (AKV10022). And what the binary does with a vault token the vault
//! refuses: it is replaced once, and a second refusal fails with the vault's code.

use std::path::Path;

use secrecy::ExposeSecret;
use testkit::{
    AppRegistration, EntraEmulator, FEDERATED_AUDIENCE, FEDERATED_AUDIENCE_CHINA,
    FEDERATED_AUDIENCE_US_GOVERNMENT, FederatedCredential, KEY_VAULT_RESOURCE,
    KEY_VAULT_RESOURCE_CHINA, KEY_VAULT_RESOURCE_US_GOVERNMENT, KeyVaultEmulator, KeyVaultOptions,
    OidcIssuer,
};

use crate::support::{Run, issued_access_tokens, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const KV_CLIENT: &str = "5e6f7a8b-aaaa-bbbb-cccc-ddddeeeeffff";
const ISSUER: &str = "https://oidc.ci.example";
const SUBJECT: &str = "repo:contoso/tokens:ref:refs/heads/main";

/// What one cloud documents (PROTOCOLS.md "National clouds", "Federated credential", Graph).
struct Cloud {
    /// The `[settings] cloud` value.
    name: &'static str,
    federated_audience: &'static str,
    vault_resource: &'static str,
    graph: &'static str,
}

const CLOUDS: [Cloud; 3] = [
    Cloud {
        name: "public",
        federated_audience: FEDERATED_AUDIENCE,
        vault_resource: KEY_VAULT_RESOURCE,
        graph: "https://graph.microsoft.com",
    },
    Cloud {
        name: "usgov",
        federated_audience: FEDERATED_AUDIENCE_US_GOVERNMENT,
        vault_resource: KEY_VAULT_RESOURCE_US_GOVERNMENT,
        graph: "https://graph.microsoft.us",
    },
    Cloud {
        name: "china",
        federated_audience: FEDERATED_AUDIENCE_CHINA,
        vault_resource: KEY_VAULT_RESOURCE_CHINA,
        graph: "https://microsoftgraph.chinacloudapi.cn",
    },
];

/// The emulators standing for `cloud`: apps trusting the CI issuer's tokens for that cloud's
/// audience only, and a vault of that cloud.
struct World {
    entra: EntraEmulator,
    kv: KeyVaultEmulator,
    issuer: OidcIssuer,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(cloud: &Cloud) -> World {
        World::start_with_vault_tenant(cloud, TENANT).await
    }

    /// As [`World::start`], with a vault that belongs to `vault_tenant`.
    async fn start_with_vault_tenant(cloud: &Cloud, vault_tenant: &str) -> World {
        let entra = EntraEmulator::start_tls().await.unwrap();
        let issuer = OidcIssuer::new(ISSUER).unwrap();
        entra.trust_issuer(&issuer);
        for client in [CLIENT, KV_CLIENT] {
            entra.register_app(
                AppRegistration::new(TENANT, client).with_federated_credential(
                    FederatedCredential::new(ISSUER, SUBJECT)
                        .with_audience(cloud.federated_audience),
                ),
            );
        }
        let kv = KeyVaultEmulator::start(
            entra.token_validator(),
            KeyVaultOptions::for_entra(&entra, vault_tenant).with_resource(cloud.vault_resource),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), entra.ca_pem().unwrap()).unwrap();
        World {
            entra,
            kv,
            issuer,
            dir,
        }
    }

    /// A config for `cloud` whose federated token (for both logins) carries `audience`.
    fn config(&self, cloud: &Cloud, audience: &str) -> String {
        self.config_with(
            cloud,
            audience,
            "",
            "{ to = \"kv\", name = \"graph-token\" }",
        )
    }

    /// As [`World::config`], with more `[settings]` lines and the job's `targets`.
    fn config_with(&self, cloud: &Cloud, audience: &str, settings: &str, targets: &str) -> String {
        let dir = self.dir.path();
        let token = dir.join("federated.jwt");
        std::fs::write(&token, self.issuer.mint(SUBJECT, audience)).unwrap();
        let ca = dir.join("ca.pem");
        let text = format!(
            "[settings]\ncloud = \"{cloud}\"\nauthority = \"{authority}\"\nca_file = \"{ca}\"\n{settings}\n\
             [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{vault}\"\nca_file = \"{ca}\"\n\
             auth = {{ method = \"federated-token\", federated_token_file = \"{token}\", \
             tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\" }}\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             federated_token_file = \"{token}\"\nscope = \"{graph}/.default\"\n\
             targets = [{targets}]\n",
            cloud = cloud.name,
            authority = self.entra.base_url(),
            ca = ca.display(),
            vault = self.kv.vault_url(),
            token = token.display(),
            graph = cloud.graph,
        );
        let path = dir.join("secret-sync.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .entra
            .token_requests()
            .iter()
            .filter(|r| r.status == Some(200))
            .filter_map(|r| r.form.get("scope").cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    fn assert_no_leak(&self, run: &Run) {
        let tokens: Vec<String> = issued_access_tokens(&self.entra);
        let federated = std::fs::read_to_string(self.dir.path().join("federated.jwt")).unwrap();
        let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
        secrets.push(&federated);
        run.assert_no_leak(&secrets);
    }
}

async fn run(config: &str) -> Run {
    secret_sync(&["run", "--config", config], &[]).await
}

#[tokio::test]
async fn a_run_in_each_cloud_uses_that_clouds_audience_vault_and_graph() {
    for cloud in &CLOUDS {
        let world = World::start(cloud).await;
        let config = world.config(cloud, cloud.federated_audience);
        let synced = run(&config).await;
        synced.assert_code(0);
        world.assert_no_leak(&synced);

        let stored = world
            .kv
            .secret("graph-token")
            .unwrap_or_else(|| panic!("{}: the token reached the vault", cloud.name));
        let issued = world
            .entra
            .validate_bearer(stored.value.expose_secret(), cloud.graph)
            .unwrap_or_else(|e| panic!("{}: the stored token: {e}", cloud.name));
        assert_eq!(issued.client_id, CLIENT, "{}", cloud.name);
        let mut expected = vec![
            format!("{}/.default", cloud.graph),
            format!("{}/.default", cloud.vault_resource),
        ];
        expected.sort();
        assert_eq!(
            world.scopes(),
            expected,
            "{}: the job's scope and the vault's (from its challenge)",
            cloud.name
        );
        // The vault met the challenge first, then a token for its cloud's resource.
        let requests = world.kv.requests();
        assert_eq!(
            (requests[0].authorized, requests[0].status),
            (false, Some(401)),
            "{}: {requests:?}",
            cloud.name
        );
        assert!(
            requests[1..]
                .iter()
                .all(|r| r.authorized && r.status != Some(401)),
            "{}: {requests:?}",
            cloud.name
        );
    }
}

#[tokio::test]
async fn an_assertion_for_another_clouds_audience_is_refused() {
    let usgov = &CLOUDS[1];
    let world = World::start(usgov).await;
    // The public cloud's audience, in a US Government setup.
    let config = world.config(usgov, FEDERATED_AUDIENCE);
    let failed = run(&config).await;
    failed.assert_code(1);
    world.assert_no_leak(&failed);
    let all = format!("{}{}", failed.stdout, failed.stderr);
    assert!(all.contains("AADSTS700212"), "{all}");
    assert!(world.kv.secret("graph-token").is_none());
}

#[tokio::test]
async fn a_cloud_that_does_not_match_the_authority_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret-sync.toml");
    std::fs::write(
        &path,
        format!(
            "[settings]\ncloud = \"usgov\"\nauthority = \"public\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"https://graph.microsoft.us/.default\"\n\
             targets = [{{ to = \"local\", name = \"graph.json\" }}]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let refused = secret_sync(
        &["validate", "--config", &path.display().to_string()],
        &[("APP_SECRET", "x")],
    )
    .await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("settings.authority")
            && refused.stderr.contains("public cloud")
            && refused.stderr.contains("cloud = \"usgov\""),
        "{}",
        refused.stderr
    );
    assert!(Path::new(&path).exists());
}

#[tokio::test]
async fn a_vault_token_refused_twice_fails_with_the_akv_code_after_one_renewal() {
    // The vault belongs to another tenant: it refuses every token of this identity.
    const OTHER: &str = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let public = &CLOUDS[0];
    let world = World::start_with_vault_tenant(public, OTHER).await;
    // One at a time: the first target's read meets the challenge and the refusal, the
    // second's is where the SDK asks again for the refused token.
    let config = world.config_with(
        public,
        public.federated_audience,
        "concurrency = 1\n",
        "{ to = \"kv\", name = \"a-token\" }, { to = \"kv\", name = \"b-token\" }",
    );
    let failed = run(&config).await;
    failed.assert_code(1);
    world.assert_no_leak(&failed);
    let vault_logins = world
        .entra
        .token_requests()
        .iter()
        .filter(|r| {
            r.form.get("client_id").map(String::as_str) == Some(KV_CLIENT) && r.status == Some(200)
        })
        .count();
    assert_eq!(
        vault_logins, 2,
        "the first vault token, and exactly one renewal after the vault refused it"
    );
    let all = format!("{}{}", failed.stdout, failed.stderr);
    assert!(all.contains("AKV10032: Invalid issuer"), "{all}");
    assert!(world.kv.secret("a-token").is_none() && world.kv.secret("b-token").is_none());
}
