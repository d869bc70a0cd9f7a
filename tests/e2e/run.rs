//! `secret-sync run` and `plan` end to end: the built binary syncing one token from the Entra
//! emulator (HTTPS) into a file, real OpenBao, real moto (AWS Secrets Manager) and the Key
//! Vault emulator, with the job's client secret itself read from OpenBao. What users rely on:
//! a second run skips (no token request, no write), `--force` refreshes, one target down does
//! not stop the others (exit 1), `--dry-run` and `plan` touch nothing, secrets secret-sync did
//! not write are left alone unless adopted, and no secret or token shows up in any output.

use std::path::Path;
use std::process::Command;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::real::{Moto, OpenBao, python};
use testkit::{Fault, KeyVaultEmulator};

use crate::support::{Run, TlsEntra, issued_access_tokens, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.graph.client.secret-value";
const KV_CLIENT: &str = "5e6f7a8b-aaaa-bbbb-cccc-ddddeeeeffff";
const KV_SECRET: &str = "Kv9~e2e.keyvault.writer.secret";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const AWS_KEY: &str = "AKIAE2ETESTKEY000001";
const AWS_SECRET_KEY: &str = "e2e/aws/secret/access/key/value/0000000";

/// The Entra emulator (HTTPS) with the Graph app and the Key Vault writer registered, and a
/// temp dir holding the CA and the config.
struct Entra(TlsEntra);

impl std::ops::Deref for Entra {
    type Target = TlsEntra;

    fn deref(&self) -> &TlsEntra {
        &self.0
    }
}

impl Entra {
    async fn start() -> Entra {
        Entra(TlsEntra::start(&[(TENANT, CLIENT, SECRET), (TENANT, KV_CLIENT, KV_SECRET)]).await)
    }

    fn settings(&self, refresh_before: &str) -> String {
        format!(
            "[settings]\nrefresh_before = \"{refresh_before}\"\nconcurrency = 4\n\
             authority = \"{}\"\nca_file = \"{}\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n",
            self.entra.base_url(),
            self.ca.display(),
            self.out().display()
        )
    }

    /// Token requests for Graph (the job's scope), not for Key Vault (the store's login).
    fn graph_requests(&self) -> usize {
        self.entra
            .token_requests()
            .iter()
            .filter(|r| r.form.get("scope").map(String::as_str) == Some(GRAPH))
            .count()
    }

    /// Every token the emulator issued to the Graph app (newest last).
    fn graph_tokens(&self) -> Vec<String> {
        self.entra
            .issued_tokens()
            .into_iter()
            .filter(|t| t.client_id == CLIENT && t.resource == "https://graph.microsoft.com")
            .map(|t| t.access_token.expose_secret().to_owned())
            .collect()
    }

    /// Panics if the client secrets or any token the emulator issued appear in `run`'s output.
    fn assert_no_leak(&self, run: &Run, more: &[&str]) {
        let tokens: Vec<String> = issued_access_tokens(&self.entra);
        let mut secrets: Vec<&str> = vec![SECRET, KV_SECRET, AWS_SECRET_KEY];
        secrets.extend(tokens.iter().map(String::as_str));
        secrets.extend(more);
        run.assert_no_leak(&secrets);
    }
}

/// The whole world of the fan-out: Entra, OpenBao holding the job's client secret, moto, and
/// the Key Vault emulator.
struct World {
    entra: Entra,
    bao: OpenBao,
    moto: Moto,
    kv: KeyVaultEmulator,
}

impl World {
    async fn start() -> World {
        let entra = Entra::start().await;
        let kv = entra.key_vault(TENANT).await;
        let bao = OpenBao::start();
        bao.api(
            "POST",
            "secret/data/apps/graph",
            Some(json!({"data": {"client_id": CLIENT, "client_secret": SECRET}})),
        );
        World {
            entra,
            bao,
            moto: Moto::start(),
            kv,
        }
    }

    fn config(&self, vault_address: &str) -> String {
        let e = &self.entra;
        format!(
            "{settings}\
             [backends.ops-vault]\nkind = \"vault\"\naddress = \"{vault_address}\"\nmount = \"secret\"\n\
             auth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n\n\
             [backends.aws]\nkind = \"aws-secrets-manager\"\nregion = \"eu-west-1\"\nendpoint_url = \"{moto}\"\n\n\
             [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{kv}\"\nca_file = \"{ca}\"\n\
             auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", client_secret = {{ env = \"KV_SECRET\" }} }}\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\n\
             client_id = {{ from = \"ops-vault\", ref = \"apps/graph#client_id\" }}\n\
             client_secret = {{ from = \"ops-vault\", ref = \"apps/graph#client_secret\" }}\n\
             scope = \"{GRAPH}\"\n\
             targets = [\n\
               {{ to = \"local\", name = \"graph.json\", format = \"json\" }},\n\
               {{ to = \"ops-vault\", name = \"tokens/graph\" }},\n\
               {{ to = \"aws\", name = \"graph/access-token\" }},\n\
               {{ to = \"kv\", name = \"graph-access-token\" }},\n\
             ]\n",
            settings = e.settings("15m"),
            moto = self.moto.endpoint_url(),
            kv = self.kv.vault_url(),
            ca = e.ca.display(),
        )
    }

    async fn run(&self, config: &str, args: &[&str]) -> Run {
        let mut all = vec![args[0], "--config", config];
        all.extend(&args[1..]);
        let run = secret_sync(
            &all,
            &[
                ("BAO_TOKEN", self.bao.root_token().expose_secret()),
                ("KV_SECRET", KV_SECRET),
                ("APP_SECRET", SECRET),
                ("AWS_ACCESS_KEY_ID", AWS_KEY),
                ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("RUST_LOG", "info"),
            ],
        )
        .await;
        self.entra
            .assert_no_leak(&run, &[self.bao.root_token().expose_secret()]);
        run
    }

    /// What each target holds now: (file token, vault token, aws token, key vault token).
    fn stored_tokens(&self) -> [String; 4] {
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(self.entra.out().join("graph.json")).unwrap(),
        )
        .unwrap();
        let vault = self.bao.api("GET", "secret/data/tokens/graph", None);
        let aws = boto3(&self.moto, "graph/access-token");
        let kv = self
            .kv
            .secret("graph-access-token")
            .expect("the Key Vault secret exists");
        [
            file["access_token"].as_str().unwrap().to_owned(),
            vault["data"]["data"]["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
            aws["value"].as_str().unwrap().to_owned(),
            kv.value.expose_secret().to_owned(),
        ]
    }
}

/// The JSON summary's targets as (target, outcome) pairs, e.g. ("local:graph.json", "created").
fn outcomes(run: &Run) -> Vec<(String, String)> {
    let doc = run.json();
    doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                format!(
                    "{}:{}",
                    t["backend"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                ),
                t["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all(outcome: &str) -> Vec<(String, String)> {
    [
        "local:graph.json",
        "ops-vault:tokens/graph",
        "aws:graph/access-token",
        "kv:graph-access-token",
    ]
    .iter()
    .map(|t| ((*t).to_owned(), outcome.to_owned()))
    .collect()
}

/// Reads a secret back with boto3 (the reference client): value and version count.
fn boto3(moto: &Moto, name: &str) -> Value {
    boto3_script(
        moto,
        name,
        "d = sm.describe_secret(SecretId=sys.argv[2])\n\
         v = sm.get_secret_value(SecretId=sys.argv[2])\n\
         print(json.dumps({'value': v['SecretString'], 'versions': len(d['VersionIdsToStages'])}))\n",
    )
}

/// Runs `script` with `sm` (a boto3 Secrets Manager client on moto) and `sys.argv[2]` = `name`;
/// returns what it printed, as JSON.
fn boto3_script(moto: &Moto, name: &str, script: &str) -> Value {
    let prelude = format!(
        "import sys, json, boto3\n\
         sm = boto3.client('secretsmanager', endpoint_url=sys.argv[1], region_name='eu-west-1', \
         aws_access_key_id='{AWS_KEY}', aws_secret_access_key='{AWS_SECRET_KEY}')\n"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(prelude + script)
        .arg(moto.endpoint_url())
        .arg(name)
        .output()
        .expect("the venv python runs");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn fan_out_to_four_backends_then_skip_then_force() {
    let w = World::start().await;
    let config = w.entra.write_config(&w.config(&w.bao.address()));

    // First run: every target is created with the one token Entra issued.
    let first = w.run(&config, &["run", "--output", "json"]).await;
    first.assert_code(0);
    assert_eq!(outcomes(&first), all("created"), "{}", first.stderr);
    assert_eq!(w.entra.graph_requests(), 1, "one token for the job");
    let issued = w.entra.graph_tokens();
    assert_eq!(issued.len(), 1);
    for (i, stored) in w.stored_tokens().iter().enumerate() {
        assert_eq!(stored, &issued[0], "target #{i} holds the issued token");
    }
    w.entra
        .entra
        .validate_bearer(&issued[0], "https://graph.microsoft.com")
        .expect("the synced token is valid for Graph");
    let kv_secret = w.kv.secret("graph-access-token").unwrap();
    assert_eq!(
        kv_secret.tags.get("managed-by").map(String::as_str),
        Some("secret-sync")
    );
    assert!(
        kv_secret.expires.is_some(),
        "Key Vault exp attribute is set"
    );

    // Second run: everything is fresh; no token for Graph, no write anywhere.
    let file = w.entra.out().join("graph.json");
    let file_time = modified(&file);
    let second = w.run(&config, &["run", "--output", "json"]).await;
    second.assert_code(0);
    assert_eq!(outcomes(&second), all("fresh"));
    assert_eq!(w.entra.graph_requests(), 1, "a fresh job asks for no token");
    assert_eq!(modified(&file), file_time, "the file was not rewritten");
    assert_eq!(w.kv.version_count("graph-access-token"), 1);
    assert_eq!(boto3(&w.moto, "graph/access-token")["versions"], 1);
    let meta = w.bao.api("GET", "secret/metadata/tokens/graph", None);
    assert_eq!(meta["data"]["current_version"], 1);

    // The table for people says the same.
    let table = w.run(&config, &["run"]).await;
    table.assert_code(0);
    assert!(table.stdout.starts_with("JOB"), "{}", table.stdout);
    assert!(
        table.stdout.contains("4 target(s): 4 fresh"),
        "{}",
        table.stdout
    );

    // --force: a new token, written everywhere.
    let forced = w
        .run(&config, &["run", "--force", "--output", "json"])
        .await;
    forced.assert_code(0);
    assert_eq!(outcomes(&forced), all("updated"));
    assert_eq!(w.entra.graph_requests(), 2);
    let issued = w.entra.graph_tokens();
    assert_eq!(issued.len(), 2);
    for (i, stored) in w.stored_tokens().iter().enumerate() {
        assert_eq!(stored, &issued[1], "target #{i} holds the new token");
    }
    assert_eq!(w.kv.version_count("graph-access-token"), 2);
}

#[tokio::test]
async fn one_target_down_fails_with_exit_1_while_the_others_are_updated() {
    let w = World::start().await;
    // A vault address nobody listens on: the job's credentials cannot come from there, so the
    // job reads them from the environment instead, and only the vault target is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = w
        .config(&address)
        .replace(
            "client_id = { from = \"ops-vault\", ref = \"apps/graph#client_id\" }",
            &format!("client_id = \"{CLIENT}\""),
        )
        .replace(
            "client_secret = { from = \"ops-vault\", ref = \"apps/graph#client_secret\" }",
            "client_secret = { env = \"APP_SECRET\" }",
        );
    let config = w.entra.write_config(&config);

    let run = w.run(&config, &["run", "--output", "json"]).await;
    run.assert_code(1);
    let got = outcomes(&run);
    let mut expected = all("created");
    expected[1].1 = "failed".to_owned();
    assert_eq!(got, expected, "{}", run.stdout);
    let doc = run.json();
    let error = doc["targets"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("ops-vault"),
        "the error names the backend: {error}"
    );
    assert_eq!(doc["ok"], false);
    assert!(
        run.stderr.contains("1 of 4 target(s) failed"),
        "stderr: {}",
        run.stderr
    );
    let issued = w.entra.graph_tokens();
    let stored_file: Value =
        serde_json::from_str(&std::fs::read_to_string(w.entra.out().join("graph.json")).unwrap())
            .unwrap();
    assert_eq!(stored_file["access_token"], issued[0].as_str());
    assert_eq!(
        boto3(&w.moto, "graph/access-token")["value"],
        issued[0].as_str()
    );
    assert_eq!(
        w.kv.secret("graph-access-token")
            .unwrap()
            .value
            .expose_secret(),
        issued[0]
    );
}

#[tokio::test]
async fn dry_run_and_plan_write_nothing_and_ask_for_no_token() {
    let w = World::start().await;
    let config = w.entra.write_config(&w.config(&w.bao.address()));
    let kv_before = w.kv.requests().len();

    let plan = w.run(&config, &["plan", "--output", "json"]).await;
    plan.assert_code(0);
    let doc = plan.json();
    assert_eq!(doc["writes"], 4, "{doc}");
    for target in doc["targets"].as_array().unwrap() {
        assert_eq!(target["action"], "create", "{target}");
        assert_eq!(target["reason"], "the secret does not exist", "{target}");
    }

    let dry = w
        .run(&config, &["run", "--dry-run", "--output", "json"])
        .await;
    dry.assert_code(0);
    assert_eq!(outcomes(&dry), all("skipped"));

    let table = w.run(&config, &["plan"]).await;
    table.assert_code(0);
    assert!(
        table
            .stdout
            .contains("4 target(s): run would write 4; 0 would fail"),
        "{}",
        table.stdout
    );

    assert_eq!(w.entra.graph_requests(), 0, "no token for the job");
    assert!(w.entra.graph_tokens().is_empty());
    assert!(
        !w.entra.out().join("graph.json").exists(),
        "no file written"
    );
    assert!(w.kv.secret("graph-access-token").is_none());
    let (status, _) = w.bao.api_raw("GET", "secret/data/tokens/graph", None);
    assert_eq!(status, 404, "nothing written to OpenBao");
    assert!(
        w.kv.requests()[kv_before..]
            .iter()
            .all(|r| r.method == "GET"),
        "Key Vault saw reads only"
    );

    // After a real run, plan says keep and dry-run says fresh.
    w.run(&config, &["run"]).await.assert_code(0);
    let plan = w.run(&config, &["plan", "--output", "json"]).await;
    let doc = plan.json();
    assert_eq!(doc["writes"], 0, "{doc}");
    assert!(
        doc["targets"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("fresh: valid for "),
        "{doc}"
    );
    let forced = w
        .run(&config, &["plan", "--force", "--output", "json"])
        .await;
    let doc = forced.json();
    assert_eq!(doc["writes"], 4, "{doc}");
    assert_eq!(w.entra.graph_requests(), 1, "plan never asks for a token");
}

#[tokio::test]
async fn unmanaged_secrets_are_left_alone_unless_adopted() {
    let e = Entra::start().await;
    std::fs::write(e.out().join("hand-written"), "written by a person\n").unwrap();
    std::fs::write(e.out().join("adopted"), "written by a person\n").unwrap();
    let config = e.write_config(&format!(
        "{}[jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
         targets = [\n\
           {{ to = \"local\", name = \"hand-written\" }},\n\
           {{ to = \"local\", name = \"adopted\", adopt = true }},\n\
         ]\n",
        e.settings("15m")
    ));
    let env = [("APP_SECRET", SECRET)];

    let plan = secret_sync(&["plan", "--config", &config], &env).await;
    e.assert_no_leak(&plan, &[]);
    plan.assert_code(1);
    assert!(plan.stdout.contains("refuse"), "{}", plan.stdout);

    let run = secret_sync(&["run", "--config", &config, "--output", "json"], &env).await;
    e.assert_no_leak(&run, &[]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["targets"][0]["outcome"], "failed");
    let error = doc["targets"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("not written by secret-sync") && error.contains("adopt = true"),
        "the error says what to do: {error}"
    );
    assert_eq!(doc["targets"][1]["outcome"], "updated");
    assert_eq!(
        std::fs::read_to_string(e.out().join("hand-written")).unwrap(),
        "written by a person\n",
        "the unmanaged file is untouched"
    );
    assert_eq!(
        std::fs::read_to_string(e.out().join("adopted")).unwrap(),
        e.graph_tokens()[0],
        "the adopted file holds the token"
    );

    // Once adopted, the target is managed: the next run finds it fresh; --force never
    // overrides the refusal.
    let again = secret_sync(
        &["run", "--config", &config, "--force", "--output", "json"],
        &env,
    )
    .await;
    e.assert_no_leak(&again, &[]);
    again.assert_code(1);
    let doc = again.json();
    assert_eq!(doc["targets"][0]["outcome"], "failed");
    assert_eq!(doc["targets"][1]["outcome"], "updated");
}

#[tokio::test]
async fn jobs_sharing_an_app_and_scope_share_one_token_request() {
    let e = Entra::start().await;
    let job = |name: &str, file: &str| {
        format!(
            "[jobs.{name}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{{ to = \"local\", name = \"{file}\" }}]\n\n"
        )
    };
    let config = e.write_config(&format!(
        "{}{}{}",
        e.settings("15m"),
        job("one", "one.token"),
        job("two", "two.token")
    ));
    let env = [("APP_SECRET", SECRET)];
    let run = secret_sync(&["run", "--config", &config], &env).await;
    e.assert_no_leak(&run, &[]);
    run.assert_code(0);
    assert_eq!(e.graph_requests(), 1, "two jobs, one request");
    let token = &e.graph_tokens()[0];
    for file in ["one.token", "two.token"] {
        assert_eq!(&std::fs::read_to_string(e.out().join(file)).unwrap(), token);
    }

    // --job picks one job; an unknown job is a usage error.
    let one = secret_sync(
        &["run", "--config", &config, "--job", "one", "--force"],
        &env,
    )
    .await;
    one.assert_code(0);
    assert!(
        one.stdout.contains("one.token") && !one.stdout.contains("two.token"),
        "{}",
        one.stdout
    );
    let unknown = secret_sync(&["run", "--config", &config, "--job", "three"], &env).await;
    e.assert_no_leak(&unknown, &[]);
    unknown.assert_code(2);
    assert!(
        unknown.stderr.contains("--job three: no such job") && unknown.stderr.contains("one, two"),
        "{}",
        unknown.stderr
    );
    e.assert_no_leak(&one, &[]);
}

#[tokio::test]
async fn a_token_expiring_within_refresh_before_is_refreshed_and_failures_exit_1() {
    let e = Entra::start().await;
    let config = e.write_config(&format!(
        "{}[jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}]\n",
        // Longer than the emulator's token lifetime: every run finds the token expiring, and
        // the token it gets does not outlive refresh_before, so the target fails (exit 1).
        e.settings("2h")
    ));
    let env = [("APP_SECRET", SECRET)];
    let first = secret_sync(&["run", "--config", &config, "--output", "json"], &env).await;
    first.assert_code(1);
    let second = secret_sync(&["run", "--config", &config, "--output", "json"], &env).await;
    second.assert_code(1);
    let doc = second.json();
    assert_eq!(doc["targets"][0]["outcome"], "failed");
    let error = doc["targets"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("written (updated), but the token Entra ID issued is valid for only")
            && error.contains("not longer than refresh_before (2h)")
            && error.contains("lower refresh_before below the token lifetime"),
        "the detail says why and what to change: {doc}"
    );
    assert_eq!(e.graph_requests(), 2);

    // A wrong secret: the job fails (exit 1) with Entra's reason, and nothing is written.
    let before = std::fs::read_to_string(e.out().join("graph.json")).unwrap();
    let wrong = secret_sync(
        &["run", "--config", &config, "--output", "json"],
        &[("APP_SECRET", "not-the-secret")],
    )
    .await;
    e.assert_no_leak(&first, &[]);
    e.assert_no_leak(&second, &[]);
    e.assert_no_leak(&wrong, &["not-the-secret"]);
    wrong.assert_code(1);
    let doc = wrong.json();
    assert_eq!(doc["targets"][0]["outcome"], "failed");
    assert!(
        doc["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("7000215"),
        "{doc}"
    );
    assert_eq!(
        std::fs::read_to_string(e.out().join("graph.json")).unwrap(),
        before
    );
}

#[tokio::test]
async fn secrets_written_by_others_are_refused_on_every_backend_until_adopted() {
    let w = World::start().await;
    // The same four names, written by people or other tools: no managed-by marker anywhere.
    const BY_HAND: &str = "written-by-hand";
    std::fs::write(w.entra.out().join("graph.json"), BY_HAND).unwrap();
    w.bao.api(
        "POST",
        "secret/data/tokens/graph",
        Some(json!({"data": {"access_token": BY_HAND}})),
    );
    boto3_script(
        &w.moto,
        "graph/access-token",
        &format!("sm.create_secret(Name=sys.argv[2], SecretString='{BY_HAND}')\nprint('{{}}')\n"),
    );
    w.kv.set_secret("graph-access-token", BY_HAND).unwrap();
    let by_hand = || {
        [
            std::fs::read_to_string(w.entra.out().join("graph.json")).unwrap(),
            w.bao.api("GET", "secret/data/tokens/graph", None)["data"]["data"]["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
            boto3(&w.moto, "graph/access-token")["value"]
                .as_str()
                .unwrap()
                .to_owned(),
            w.kv.secret("graph-access-token")
                .unwrap()
                .value
                .expose_secret()
                .to_owned(),
        ]
    };
    let config = w.entra.write_config(&w.config(&w.bao.address()));

    let refused = w
        .run(&config, &["run", "--force", "--output", "json"])
        .await;
    refused.assert_code(1);
    assert_eq!(outcomes(&refused), all("failed"), "{}", refused.stdout);
    let doc = refused.json();
    for target in doc["targets"].as_array().unwrap() {
        let error = target["error"].as_str().unwrap();
        assert!(error.contains("set `adopt = true`"), "{error}");
    }
    assert_eq!(w.entra.graph_requests(), 0, "nothing to write, so no token");
    assert_eq!(by_hand(), [BY_HAND; 4].map(str::to_owned), "all untouched");

    // adopt = true on every target: taken over, and managed from then on.
    let adopting = w
        .config(&w.bao.address())
        .replace("\" },\n", "\", adopt = true },\n");
    let config = w.entra.write_config(&adopting);
    let adopted = w.run(&config, &["run", "--output", "json"]).await;
    adopted.assert_code(0);
    assert_eq!(outcomes(&adopted), all("updated"), "{}", adopted.stdout);
    let token = &w.entra.graph_tokens()[0];
    assert_eq!(w.stored_tokens(), [0, 1, 2, 3].map(|_| token.clone()));
    let again = w.run(&config, &["run", "--output", "json"]).await;
    again.assert_code(0);
    assert_eq!(outcomes(&again), all("fresh"));
}

#[tokio::test]
async fn a_failing_job_or_backend_never_stops_the_others() {
    let e = Entra::start().await;
    let kv = e.key_vault(TENANT).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = e.write_config(&format!(
        "{settings}\
         [backends.down-vault]\nkind = \"vault\"\naddress = \"{down}\"\n\
         auth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n\n\
         [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{kv}\"\nca_file = \"{ca}\"\n\
         auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", \
         client_secret = {{ env = \"KV_SECRET\" }} }}\n\n\
         [jobs.a]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ from = \"down-vault\", ref = \"apps/graph#client_secret\" }}\n\
         scope = \"{GRAPH}\"\ntargets = [{{ to = \"local\", name = \"a.token\" }}]\n\n\
         [jobs.b]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"b.token\" }}, {{ to = \"kv\", name = \"b-token\" }}]\n",
        settings = e.settings("15m"),
        kv = kv.vault_url(),
        ca = e.ca.display(),
    ));
    // KV_SECRET is not set: the Key Vault backend cannot log in, its targets fail; the other
    // jobs still run, and the exit code is 2 (a missing variable is a usage error).
    let run = secret_sync(
        &["run", "--config", &config, "--output", "json"],
        &[("APP_SECRET", SECRET), ("BAO_TOKEN", "bao-token-e2e")],
    )
    .await;
    e.assert_no_leak(&run, &["bao-token-e2e"]);
    run.assert_code(2);
    let doc = run.json();
    let targets = doc["targets"].as_array().unwrap();
    let outcome = |i: usize| targets[i]["outcome"].as_str().unwrap();
    assert_eq!(
        [outcome(0), outcome(1), outcome(2)],
        ["failed", "created", "failed"],
        "{doc}"
    );
    let job_a = targets[0]["error"].as_str().unwrap();
    assert!(
        job_a.contains("cannot read the job's credentials") && job_a.contains("down-vault"),
        "{job_a}"
    );
    let kv_error = targets[2]["error"].as_str().unwrap();
    assert!(
        kv_error.contains("backend \"kv\"") && kv_error.contains("KV_SECRET is not set"),
        "{kv_error}"
    );
    assert_eq!(
        std::fs::read_to_string(e.out().join("b.token")).unwrap(),
        e.graph_tokens()[0]
    );
    assert!(!e.out().join("a.token").exists());
    assert!(kv.secret("b-token").is_none());
}

#[tokio::test]
async fn only_targets_that_need_it_are_written_and_an_empty_token_is_never_written() {
    let e = Entra::start().await;
    let config = e.write_config(&format!(
        "{}[jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"kept\" }}, {{ to = \"local\", name = \"lost\" }}]\n",
        e.settings("15m")
    ));
    let env = [("APP_SECRET", SECRET)];
    secret_sync(&["run", "--config", &config], &env)
        .await
        .assert_code(0);
    let first = e.graph_tokens()[0].clone();
    let kept_time = modified(&e.out().join("kept"));

    // One target lost its secret: only that one is written, the fresh one keeps its token.
    std::fs::remove_file(e.out().join("lost")).unwrap();
    std::fs::remove_file(e.out().join("lost.meta.json")).unwrap();
    let run = secret_sync(&["run", "--config", &config, "--output", "json"], &env).await;
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(
        doc["counts"],
        json!({"created": 1, "updated": 0, "unchanged": 0, "fresh": 1, "skipped": 0, "failed": 0}),
        "{doc}"
    );
    assert_eq!(modified(&e.out().join("kept")), kept_time);
    assert_eq!(
        std::fs::read_to_string(e.out().join("kept")).unwrap(),
        first
    );
    let second = e.graph_tokens()[1].clone();
    assert_eq!(
        std::fs::read_to_string(e.out().join("lost")).unwrap(),
        second
    );

    // Entra answers 200 with an empty access_token: refused, nothing is written, exit 1.
    std::fs::remove_file(e.out().join("lost")).unwrap();
    std::fs::remove_file(e.out().join("lost.meta.json")).unwrap();
    e.entra.inject(Fault::EmptyAccessToken);
    let empty = secret_sync(&["run", "--config", &config, "--output", "json"], &env).await;
    e.assert_no_leak(&run, &[]);
    e.assert_no_leak(&empty, &[]);
    empty.assert_code(1);
    let doc = empty.json();
    assert_eq!(doc["targets"][1]["outcome"], "failed", "{doc}");
    assert!(
        doc["targets"][1]["error"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{doc}"
    );
    assert!(!e.out().join("lost").exists(), "no empty token was written");
    assert_eq!(
        std::fs::read_to_string(e.out().join("kept")).unwrap(),
        first
    );

    // A config that cannot be loaded is a usage error.
    let missing = e.dir.path().join("nowhere.toml");
    let bad = secret_sync(&["run", "--config", missing.to_str().unwrap()], &env).await;
    bad.assert_code(2);
    let plan = secret_sync(&["plan", "--config", missing.to_str().unwrap()], &env).await;
    plan.assert_code(2);
}
