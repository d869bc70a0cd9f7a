//! The conventions users expect of a command-line tool, checked on the built binary: shell
//! completions for every supported shell, a man page generated from the same definitions as
//! `--help`, and the environment fallbacks of the common flags (`SECRET_SYNC_CONFIG`,
//! `SECRET_SYNC_LOG_FORMAT`) taking effect. Also the CI recipes of docs/recipes.md: each shows
//! a config file of config/ verbatim (which `every_example_config_validates` loads), and its
//! YAML parses and wires up the OIDC token the config expects.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator};

use crate::support::secret_sync;

/// The commands a user can type, as `--help` lists them; each must be completed and documented.
async fn subcommands() -> Vec<String> {
    let run = secret_sync(&["--help"], &[]).await;
    run.assert_code(0);
    let commands: Vec<String> = run
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    for known in ["token", "run", "plan", "validate", "schema", "completions"] {
        assert!(
            commands.iter().any(|c| c == known),
            "`{known}` missing from the commands read off --help: {commands:?}\n{}",
            run.stdout
        );
    }
    commands
}

#[tokio::test]
async fn completions_for_every_shell_name_every_subcommand() {
    let subcommands = subcommands().await;
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = secret_sync(&["completions", shell], &[]).await;
        run.assert_code(0);
        assert!(
            run.stdout.len() > 1000,
            "{shell}: the script is suspiciously short:\n{}",
            run.stdout
        );
        assert!(run.stderr.is_empty(), "{shell}: stderr: {}", run.stderr);
        for sub in &subcommands {
            assert!(
                run.stdout.contains(sub),
                "{shell}: the completion script does not name `{sub}`"
            );
        }
        for flag in ["config", "force", "log-format"] {
            // fish spells a long flag `-l NAME`, the other shells `--NAME`.
            assert!(
                run.stdout.contains(&format!("--{flag}"))
                    || run.stdout.contains(&format!("-l {flag}")),
                "{shell}: the completion script does not name `--{flag}`"
            );
        }
    }
}

/// Sources the bash script in a real bash and asks it to complete `words` (the last one being
/// the word under the cursor), as bash does on TAB.
fn bash_complete(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret-sync.bash");
    std::fs::write(&path, script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _secret__sync secret-sync '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn bash_completes_subcommands_and_their_flags() {
    let run = secret_sync(&["completions", "bash"], &[]).await;
    run.assert_code(0);
    assert_eq!(bash_complete(&run.stdout, &["secret-sync", "ru"]), ["run"]);
    assert_eq!(
        bash_complete(&run.stdout, &["secret-sync", "run", "--fo"]),
        ["--force"]
    );
    assert_eq!(
        bash_complete(&run.stdout, &["secret-sync", "completions", "po"]),
        ["powershell"]
    );
}

#[tokio::test]
async fn completions_for_an_unknown_shell_is_a_usage_error() {
    let run = secret_sync(&["completions", "tcsh"], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("bash") && run.stderr.contains("powershell"),
        "the error lists the shells: {}",
        run.stderr
    );
}

#[tokio::test]
async fn man_page_documents_every_subcommand_and_the_exit_codes() {
    let subcommands = subcommands().await;
    let run = secret_sync(&["man"], &[]).await;
    run.assert_code(0);
    let page = &run.stdout;
    assert!(
        page.starts_with(".ie") || page.contains(".TH secret-sync 1"),
        "not roff:\n{page}"
    );
    assert!(page.contains(".TH secret-sync 1"), "page:\n{page}");
    for sub in &subcommands {
        let name = format!("secret\\-sync\\-{sub}(1)");
        assert!(page.contains(&name), "{name} missing from:\n{page}");
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "page:\n{page}");
    assert!(
        page.contains("usage or configuration error"),
        "exit code 2 is explained:\n{page}"
    );
    assert!(page.contains("SECRET_SYNC_CONFIG"), "page:\n{page}");
}

#[tokio::test]
async fn man_out_dir_writes_a_page_per_command() {
    let subcommands = subcommands().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let run = secret_sync(&["man", "--out-dir", out.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    for page in std::iter::once("secret-sync.1".to_owned())
        .chain(subcommands.iter().map(|sub| format!("secret-sync-{sub}.1")))
    {
        let text = std::fs::read_to_string(out.join(&page))
            .unwrap_or_else(|e| panic!("{page} was not written: {e}; stdout: {}", run.stdout));
        assert!(text.contains("EXIT STATUS"), "{page}:\n{text}");
    }
    assert!(
        !out.join("secret-sync-man.1").exists(),
        "the hidden man command gets no page"
    );
}

#[tokio::test]
async fn secret_sync_config_names_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n\
             [jobs.graph]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\
             client_id = \"0a1b2c3d-1111-2222-3333-444455556666\"\n\
             client_secret = {{ env = \"GRAPH_SECRET\" }}\n\
             scope = \"https://graph.microsoft.com/.default\"\n\
             targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let good_path = good.to_str().unwrap();

    let run = secret_sync(&["validate"], &[("SECRET_SYNC_CONFIG", good_path)]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains(good_path) && run.stdout.contains("OK"),
        "validate read the file SECRET_SYNC_CONFIG names: {}",
        run.stdout
    );

    // --config wins over the environment.
    let missing = dir.path().join("missing.toml");
    let run = secret_sync(
        &["validate", "--config", missing.to_str().unwrap()],
        &[("SECRET_SYNC_CONFIG", good_path)],
    )
    .await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("missing.toml"),
        "the error names the --config file: {}",
        run.stderr
    );
}

#[tokio::test]
async fn secret_sync_log_format_json_makes_json_log_lines() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
    const SECRET: &str = "Zq8~conventions.client.secret-value";
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let base = entra.base_url();
    let mut args = crate::support::token_args(TENANT, CLIENT, &base);
    args.extend(["--client-secret-env", "APP_SECRET"]);

    for (format, want_json) in [("json", true), ("text", false)] {
        let run = secret_sync(
            &args,
            &[
                ("APP_SECRET", SECRET),
                ("RUST_LOG", "info"),
                ("SECRET_SYNC_LOG_FORMAT", format),
            ],
        )
        .await;
        run.assert_code(0);
        run.assert_no_leak(&[SECRET]);
        let line = run
            .stderr
            .lines()
            .find(|line| line.contains("access token acquired"))
            .unwrap_or_else(|| panic!("{format}: no log line in stderr: {}", run.stderr));
        let parsed = serde_json::from_str::<Value>(line);
        assert_eq!(
            parsed.is_ok(),
            want_json,
            "SECRET_SYNC_LOG_FORMAT={format}: log line {line:?}"
        );
        if let Ok(event) = parsed {
            assert_eq!(event["level"], "INFO", "{line}");
        }
    }

    let run = secret_sync(&["validate"], &[("SECRET_SYNC_LOG_FORMAT", "yaml")]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("yaml"),
        "a bad SECRET_SYNC_LOG_FORMAT is refused by name: {}",
        run.stderr
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fenced block that follows each `<!-- MARKER: NAME -->` line of docs/recipes.md, by NAME.
fn marked_blocks(marker: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("docs/recipes.md")).unwrap();
    let prefix = format!("<!-- {marker}: ");
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix(&prefix)
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "docs/recipes.md: `{line}` must be followed by a code fence, not {fence:?}"
        );
        let mut body = String::new();
        for line in lines.by_ref().take_while(|l| !l.starts_with("```")) {
            body.push_str(line);
            body.push('\n');
        }
        blocks.push((name.to_owned(), body));
    }
    blocks
}

#[test]
fn recipes_show_the_tested_config_files_verbatim() {
    let blocks = marked_blocks("recipe-config");
    let names: Vec<&str> = blocks.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "config/github-actions.toml",
            "config/gitlab-ci.toml",
            "config/kubernetes-cronjob.toml"
        ],
        "the recipes and their configs"
    );
    for (name, shown) in blocks {
        let file = std::fs::read_to_string(repo_root().join(&name))
            .unwrap_or_else(|e| panic!("{name} (shown in docs/recipes.md) cannot be read: {e}"));
        assert_eq!(
            shown, file,
            "docs/recipes.md shows {name} differently from the file: copy the file into the page"
        );
    }
}

/// Each recipe's YAML, parsed by PyYAML into JSON documents (PyYAML is in the test servers'
/// venv as a dependency of moto's `responses`).
fn recipe_yaml(name: &str) -> Vec<Value> {
    let (_, yaml) = marked_blocks("recipe-yaml")
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("docs/recipes.md has no `recipe-yaml: {name}` block"));
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(sys.stdin))))";
    let mut child = Command::new(testkit::real::python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {name} YAML in docs/recipes.md does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The config a recipe points SECRET_SYNC_CONFIG at, checked to exist and to say `key`.
fn assert_config_has(path: &str, key: &str) {
    let text = std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("the recipe's SECRET_SYNC_CONFIG {path} cannot be read: {e}"));
    assert!(text.contains(key), "{path} should use `{key}`");
}

#[test]
fn github_recipe_grants_the_oidc_token_the_config_uses() {
    let docs = recipe_yaml("github");
    let workflow = &docs[0];
    assert_eq!(workflow["permissions"]["id-token"], "write", "{workflow:#}");
    let steps = workflow["jobs"]["sync"]["steps"].as_array().unwrap();
    let sync = steps
        .iter()
        .find(|step| {
            step["run"]
                .as_str()
                .is_some_and(|r| r.starts_with("secret-sync run"))
        })
        .expect("a step runs secret-sync run");
    let env = &sync["env"];
    let config = env["SECRET_SYNC_CONFIG"].as_str().unwrap();
    assert_config_has(config, "github_oidc = true");
    for var in ["AZURE_TENANT_ID", "AZURE_CLIENT_ID"] {
        assert_config_has(config, &format!("{{ env = \"{var}\" }}"));
        let value = env[var].as_str().unwrap_or_default();
        assert!(
            value.contains("vars."),
            "{var} comes from a variable, not a secret: {value}"
        );
    }
}

#[test]
fn gitlab_recipe_mints_both_id_tokens_the_config_reads() {
    let docs = recipe_yaml("gitlab");
    let job = &docs[0]["secret-sync"];
    let tokens = &job["id_tokens"];
    assert_eq!(
        tokens["AZURE_FEDERATED_TOKEN"]["aud"], "api://AzureADTokenExchange",
        "{job:#}"
    );
    assert!(tokens["VAULT_ID_TOKEN"]["aud"].is_string(), "{job:#}");
    let config = job["variables"]["SECRET_SYNC_CONFIG"].as_str().unwrap();
    assert_config_has(config, "federated_token_env = \"AZURE_FEDERATED_TOKEN\"");
    assert_config_has(config, "jwt_env = \"VAULT_ID_TOKEN\"");
}

#[test]
fn kubernetes_recipe_sets_up_workload_identity_and_mounts_the_config() {
    let docs = recipe_yaml("kubernetes");
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    assert!(
        account["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string(),
        "{account:#}"
    );
    let cron = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
    let container = &pod["spec"]["containers"][0];
    let config_path = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SECRET_SYNC_CONFIG")
        .and_then(|e| e["value"].as_str())
        .expect("SECRET_SYNC_CONFIG is set");
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(config_path, format!("{mount}/secret-sync.toml"));
    assert_eq!(
        pod["spec"]["volumes"][0]["configMap"]["name"],
        "secret-sync-config"
    );
    let page = std::fs::read_to_string(repo_root().join("docs/recipes.md")).unwrap();
    assert!(
        page.contains(
            "create configmap secret-sync-config \\\n  --from-file=secret-sync.toml=config/kubernetes-cronjob.toml"
        ),
        "the ConfigMap is made from the tested file under the key the pod reads"
    );
    assert_config_has("config/kubernetes-cronjob.toml", "workload_identity = true");
}
