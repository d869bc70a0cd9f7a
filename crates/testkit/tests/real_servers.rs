//! The real-server helpers start what they promise: moto answers a Secrets Manager call made
//! with boto3 from the venv, and OpenBao serves KV v1, AppRole and JWT logins set up through
//! the helpers. If these fail, every backend test built on them fails for the same reason.

use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::json;
use testkit::real::{JwtRole, Moto, OpenBao, python};

#[test]
fn moto_answers_boto3() {
    let moto = Moto::start();
    let script = r#"
import sys, boto3
sm = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
sm.create_secret(Name="probe/one", SecretString="v1")
print(sm.get_secret_value(SecretId="probe/one")["SecretString"])
"#;
    let out = Command::new(python())
        .args(["-c", script, &moto.endpoint_url()])
        .output()
        .expect("the venv python runs");
    assert!(
        out.status.success(),
        "boto3 against moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
}

#[test]
fn openbao_serves_kv1_approle_and_jwt() {
    let bao = OpenBao::start();
    assert!(bao.address().starts_with("http://127.0.0.1:"));
    assert!(
        !format!("{bao:?}").contains(bao.root_token().expose_secret()),
        "Debug leaks the root token: {bao:?}"
    );

    bao.enable_kv("kv1", 1);
    bao.api(
        "POST",
        "kv1/apps/graph",
        Some(json!({"client_secret": "s"})),
    );
    let read = bao.api("GET", "kv1/apps/graph", None);
    assert_eq!(read["data"], json!({"client_secret": "s"}));

    bao.put_policy("reader", r#"path "kv1/*" { capabilities = ["read"] }"#);
    let creds = bao.enable_approle("approle", "sync", &["reader"]);
    let login = bao.api(
        "POST",
        "auth/approle/login",
        Some(json!({"role_id": creds.role_id, "secret_id": creds.secret_id.expose_secret()})),
    );
    assert_eq!(login["auth"]["policies"], json!(["default", "reader"]));

    let key = rcgen::KeyPair::generate().unwrap();
    bao.enable_jwt(
        "jwt",
        &JwtRole {
            role: "ci",
            public_key_pem: &key.public_key_pem(),
            bound_audience: "openbao",
            bound_subject: "repo:org/repo:ref:refs/heads/main",
            policies: &["reader"],
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://issuer.test", "aud": "openbao",
        "sub": "repo:org/repo:ref:refs/heads/main", "iat": now, "exp": now + 300,
    });
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let login = bao.api(
        "POST",
        "auth/jwt/login",
        Some(json!({"role": "ci", "jwt": jwt})),
    );
    assert_eq!(login["auth"]["policies"], json!(["default", "reader"]));

    let (status, _) = bao.api_raw(
        "POST",
        "auth/jwt/login",
        Some(json!({"role": "ci", "jwt": "not.a.jwt"})),
    );
    assert_eq!(status, 400, "a bad JWT must be refused");
}

#[test]
fn a_missing_tool_panics_with_the_setup_command() {
    let panic = std::panic::catch_unwind(|| testkit::real::tool("no-such-test-server-xyz"))
        .expect_err("a missing tool must panic, not skip");
    let message = panic
        .downcast_ref::<String>()
        .expect("the panic carries a formatted message");
    assert!(
        message.contains("no-such-test-server-xyz not found")
            && message.contains("cargo xtask setup"),
        "unexpected message: {message}"
    );
}
