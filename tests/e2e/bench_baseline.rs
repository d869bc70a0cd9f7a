//! The baseline of `cargo xtask bench`, `bench/curl-sync.sh`, really does the job it is timed
//! against: one token from the Entra emulator written to OpenBao, moto (a SigV4-signed
//! PutSecretValue) and a file, with nothing printed. Run here so the figures in
//! docs/performance.md keep comparing secret-sync with a script that works.

use std::process::Command;

use secrecy::ExposeSecret;
use serde_json::Value;
use testkit::real::{Moto, OpenBao, python};
use testkit::{AppRegistration, EntraEmulator};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Bn3~baseline.client.secret-value";
const AWS_KEY: &str = "AKIABASELINE00000001";
const AWS_SECRET_KEY: &str = "baseline/aws/secret/access/key/00000000";
const NAME: &str = "bench/curl-token";

/// Runs `script` with `sm`, a boto3 Secrets Manager client on moto; returns its stdout.
fn boto3(moto: &Moto, script: &str) -> String {
    let prelude = format!(
        "import sys, json, boto3\n\
         sm = boto3.client('secretsmanager', endpoint_url='{}', region_name='eu-west-1', \
         aws_access_key_id='{AWS_KEY}', aws_secret_access_key='{AWS_SECRET_KEY}')\n",
        moto.endpoint_url()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(prelude + script)
        .output()
        .expect("the venv python runs");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_script_writes_one_token_to_vault_aws_and_a_file() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let bao = OpenBao::start();
    let moto = Moto::start();
    boto3(
        &moto,
        &format!("sm.create_secret(Name='{NAME}', SecretString='not a token yet')"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("curl-token.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/curl-sync.sh");

    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ENTRA_TOKEN_URL", entra.token_url(TENANT))
        .env("CLIENT_ID", CLIENT)
        .env("CLIENT_SECRET", SECRET)
        .env("SCOPE", "https://graph.microsoft.com/.default")
        .env("VAULT_ADDR", bao.address())
        .env("VAULT_TOKEN", bao.root_token().expose_secret())
        .env("VAULT_MOUNT", "secret")
        .env("VAULT_NAME", NAME)
        .env("AWS_ENDPOINT", moto.endpoint_url())
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", AWS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
        .env("AWS_SECRET_ID", NAME)
        .env("OUT_FILE", &out_file)
        .output()
        .await
        .expect("bash runs");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "the script failed or printed something ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(entra.token_request_count(), 1, "one token request");
    let issued = entra.issued_tokens();
    let token = issued[0].access_token.expose_secret();

    let file: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(file["access_token"], token, "the file holds the token");
    assert!(file["expires_on"].as_i64().unwrap() > 0, "{file}");
    let vault = bao.api("GET", &format!("secret/data/{NAME}"), None);
    assert_eq!(
        vault["data"]["data"]["access_token"], token,
        "OpenBao holds the token"
    );
    let aws = boto3(
        &moto,
        &format!("print(sm.get_secret_value(SecretId='{NAME}')['SecretString'])"),
    );
    assert_eq!(aws.trim(), token, "moto holds the token");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
}
