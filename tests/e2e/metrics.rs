//! The daemon's `/healthz`, `/readyz` and `/metrics` as monitoring sees them, and
//! docs/operations.md kept true: a live daemon with a working and a failing job is scraped and
//! its output parsed as Prometheus text; every metric and label the page's alert rules use is
//! one the daemon exports; the page's configs validate; its Deployment, systemd unit and scrape
//! config agree with those configs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator};

use crate::support::{
    Daemon, http_get, issued_access_tokens, secret_sync, wait_until, yaml_documents,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.metrics.client.secret-value";
const WRONG_SECRET: &str = "Zq8~e2e.metrics.wrong.secret-value";

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text format strictly: every line is `# HELP`, `# TYPE` or
/// `name{label="value",...} value`, and every sample's metric has a TYPE line before it.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name, parse_labels(body, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?} in {line:?}"
        );
        assert!(typed.contains(name), "{name} has no # TYPE line before it");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (name, rest) = body
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\" in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars
                .next()
                .unwrap_or_else(|| panic!("unclosed label in {line:?}"))
            {
                (_, '\\') => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        let rest = &rest[end + 1..];
        body = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

fn job(name: &str, secret_env: &str, target: &str) -> String {
    format!(
        "[jobs.{name}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"{secret_env}\" }}\n\
         scope = \"https://graph.microsoft.com/.default\"\n\
         targets = [{{ to = \"local\", name = \"{target}\" }}]\n\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_every_series_and_readyz_names_the_job_that_failed() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let config = dir.path().join("secret-sync.toml");
    std::fs::write(
        &config,
        format!(
            "[settings]\nrefresh_before = \"10m\"\nauthority = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n{}{}",
            entra.base_url(),
            dir.path().join("out").display(),
            job("good", "GOOD_SECRET", "good-token"),
            job("bad", "BAD_SECRET", "bad-token"),
        ),
    )
    .unwrap();

    let secrets = [("GOOD_SECRET", SECRET), ("BAD_SECRET", WRONG_SECRET)];
    let mut daemon = Daemon::spawn(
        dir.path().join("daemon.log"),
        &config,
        &["daemon"],
        &secrets,
    );
    let addr = daemon.listen_addr().await;
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    // Both jobs have run a pass once the failure counter of the bad one shows.
    let mut metrics = String::new();
    let ran = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        metrics.contains("job=\"good\",outcome=\"success\"")
            && metrics.contains("secret_sync_job_runs_total{job=\"bad\",outcome=\"failure\"}")
    })
    .await;
    assert!(ran, "both jobs never ran; output:\n{}", daemon.output());

    let (status, head, _) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_prometheus(&metrics);
    let has = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().any(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    };
    for (name, labels) in [
        (
            "secret_sync_token_requests_total",
            &[("job", "good"), ("outcome", "success")][..],
        ),
        (
            "secret_sync_token_requests_total",
            &[("job", "bad"), ("outcome", "failure")],
        ),
        (
            "secret_sync_target_writes_total",
            &[
                ("job", "good"),
                ("target", "local:good-token"),
                ("outcome", "created"),
            ],
        ),
        (
            "secret_sync_target_writes_total",
            &[
                ("job", "bad"),
                ("target", "local:bad-token"),
                ("outcome", "failed"),
            ],
        ),
        (
            "secret_sync_token_expiry_seconds",
            &[("job", "good"), ("target", "local:good-token")],
        ),
        (
            "secret_sync_job_runs_total",
            &[("job", "good"), ("outcome", "success")],
        ),
        (
            "secret_sync_job_runs_total",
            &[("job", "bad"), ("outcome", "failure")],
        ),
        ("secret_sync_config_loaded", &[]),
    ] {
        assert!(has(name, labels), "no {name} {labels:?} in:\n{metrics}");
    }
    let expiry = samples
        .iter()
        .find(|(n, ..)| n == "secret_sync_token_expiry_seconds")
        .map(|(.., v)| *v)
        .unwrap();
    let now = crate::support::now_unix() as f64;
    assert!(
        (now + 3000.0..now + 3700.0).contains(&expiry),
        "the expiry gauge is Unix time about an hour ahead: {expiry} (now {now})"
    );

    let (status, _, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("bad") && !body.contains("good"), "{body}");

    // Nothing secret is served or logged.
    let tokens: Vec<String> = issued_access_tokens(&entra);
    assert!(!tokens.is_empty());
    let output = daemon.output();
    for text in [&metrics, &output] {
        for secret in tokens
            .iter()
            .map(String::as_str)
            .chain([SECRET, WRONG_SECRET])
        {
            assert!(!text.contains(secret), "a secret leaked into:\n{text}");
        }
    }

    // A second daemon on the same address refuses to start, naming the address.
    let taken = dir.path().join("taken.toml");
    std::fs::write(
        &taken,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("127.0.0.1:0", &addr),
    )
    .unwrap();
    let mut second = Daemon::spawn(dir.path().join("second.log"), &taken, &["daemon"], &secrets);
    let code = second.exit_code(Duration::from_secs(20)).await;
    let second_output = second.output();
    assert_eq!(code, 2, "{second_output}");
    assert!(
        second_output.contains(&format!("could not listen on {addr}")),
        "{second_output}"
    );

    daemon.signal("TERM");
    assert_eq!(daemon.exit_code(Duration::from_secs(40)).await, 0);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener is closed after SIGTERM"
    );
}

fn operations_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"))
        .unwrap()
}

/// The bodies of the page's blocks fenced with exactly `info`.
fn blocks(text: &str, info: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start() == format!("```{info}") => current = Some(String::new()),
            None => {}
            Some(body) if line.trim_start().starts_with("```") => {
                found.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    found
}

/// `KEY=VALUE` lines of a systemd unit, in order (a key may repeat).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn operations_page_examples_agree_with_the_daemon_and_each_other() {
    let page = operations_md();
    let yaml: Vec<Value> = blocks(&page, "yaml")
        .iter()
        .flat_map(|b| yaml_documents("YAML in docs/operations.md", b))
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool| {
        yaml.iter()
            .find(|d| pred(d))
            .cloned()
            .unwrap_or_else(|| panic!("an expected YAML document is missing: {yaml:#?}"))
    };

    // The alert rules use only the series the daemon exports (see the live test above for
    // their labels), the renamed `exported_job` label, and the scrape job's name.
    let rules = find(&|d| d["groups"].is_array());
    let exported: BTreeSet<&str> = [
        "secret_sync_token_requests_total",
        "secret_sync_target_writes_total",
        "secret_sync_token_expiry_seconds",
        "secret_sync_job_runs_total",
        "secret_sync_config_reloads_total",
        "secret_sync_config_loaded",
        // Exported for jobs that watch their app's credentials (tests/e2e/credentials.rs).
        "secret_sync_credential_expiry_timestamp_seconds",
    ]
    .into();
    let mut alerts = Vec::new();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        let text = rule.to_string();
        for name in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("secret_sync_"))
        {
            assert!(exported.contains(name), "{name} is not exported: {expr}");
        }
        assert!(
            !text.contains("$labels.job") && !expr.contains("on (instance, job)"),
            "the daemon's job label is exported_job in Prometheus: {text}"
        );
        alerts.push(rule["alert"].as_str().unwrap().to_owned());
    }
    for alert in [
        "SecretSyncDown",
        "SecretSyncTokenExpiringSoon",
        "SecretSyncTokenExpired",
        "SecretSyncJobFailing",
    ] {
        assert!(
            alerts.iter().any(|a| a == alert),
            "no {alert} in {alerts:?}"
        );
    }
    let scrape = find(&|d| d["scrape_configs"].is_array());
    let scrape_job = scrape["scrape_configs"][0]["job_name"].as_str().unwrap();
    assert!(
        rules
            .to_string()
            .contains(&format!("up{{job=\\\"{scrape_job}\\\"}}")),
        "the down alert watches the scrape job {scrape_job}"
    );

    // Every config on the page validates (the ```toml blocks are also checked by docs.rs).
    let configmap = find(&|d| d["kind"] == "ConfigMap");
    let k8s_config = configmap["data"]["secret-sync.toml"].as_str().unwrap();
    let systemd_config = blocks(&page, "toml").pop().expect("the systemd config");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("k8s.toml", k8s_config), ("systemd.toml", &systemd_config)] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let run = secret_sync(&["validate", "--config", path.to_str().unwrap()], &[]).await;
        run.assert_code(0);
    }
    let listen_port = |config: &str| {
        let line = config
            .lines()
            .find(|l| l.trim_start().starts_with("listen ="))
            .unwrap_or_else(|| panic!("no listen in {config}"));
        line.rsplit_once(':')
            .unwrap()
            .1
            .trim_end_matches('"')
            .to_owned()
    };
    assert_eq!(
        scrape["scrape_configs"][0]["static_configs"][0]["targets"][0],
        format!("127.0.0.1:{}", listen_port(&systemd_config)),
        "the scrape config scrapes the systemd config's listener"
    );

    // The Deployment: one pod at a time, probes on the config's port, time for the drain.
    let deployment = find(&|d| d["kind"] == "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let pod = &spec["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "daemon");
    assert_eq!(
        container["ports"][0]["containerPort"].to_string(),
        listen_port(k8s_config)
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(
        container["args"][2].as_str().unwrap(),
        format!("{mount}/secret-sync.toml")
    );

    // The systemd unit: runs the daemon on the page's config, reloads with SIGHUP, waits
    // longer than the drain, and hands over the credential the config reads.
    let unit = blocks(&page, "ini").pop().expect("the unit file");
    let settings = unit_settings(&unit);
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    let config_path = systemd_config
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .expect("the config block names its path");
    assert_eq!(
        get("ExecStart"),
        format!("/usr/local/bin/secret-sync daemon --config {config_path}")
    );
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    let stop: u64 = get("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(
        stop > 30,
        "TimeoutStopSec={stop}s leaves no room for the 30 s drain"
    );
    let credential = get("LoadCredential").split(':').next().unwrap();
    assert!(
        systemd_config.contains(&format!(
            "/run/credentials/secret-sync.service/{credential}"
        )),
        "the config reads the credential {credential}"
    );
    let backend_dir = format!("dir = \"/var/lib/{}\"", get("StateDirectory"));
    assert!(
        systemd_config.contains(&backend_dir),
        "the file backend writes to the state directory ({backend_dir})"
    );
}
