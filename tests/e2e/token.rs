//! `secret-sync token` against the testkit Entra ID emulator: every credential kind, both
//! output formats, GitHub Actions masking, and the usage errors that must exit 2 before any
//! request is sent.

use crate::support::secret_sync;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// Usage errors: each exits 2 and says what is wrong, without contacting anything
/// (the authority points at a closed port, so a request would fail with exit 1 instead).
#[tokio::test]
async fn usage_errors_exit_2_with_a_clear_message() {
    let closed = "http://127.0.0.1:9";
    // (arguments, environment, what stderr must mention)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--scope",
                GRAPH,
            ],
            vec![],
            "--client-secret-env",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                "common",
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--scope",
                GRAPH,
                "--authority",
                closed,
            ],
            vec![("S", "x")],
            "common",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "NOT_SET",
                "--scope",
                GRAPH,
                "--authority",
                closed,
            ],
            vec![],
            "NOT_SET",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--scope",
                "https://graph.microsoft.com/User.Read",
                "--authority",
                closed,
            ],
            vec![("S", "x")],
            "/.default",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--scope",
                GRAPH,
                "--authority",
                "http://login.example.com",
            ],
            vec![("S", "x")],
            "https",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                "not-a-guid",
                "--client-secret-env",
                "S",
                "--scope",
                GRAPH,
                "--authority",
                closed,
            ],
            vec![("S", "x")],
            "client",
        ),
        (
            vec![
                "token",
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--scope",
                GRAPH,
                "--authority",
                closed,
            ],
            vec![("S", "x")],
            "--tenant-id",
        ),
        (
            vec![
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--github-oidc",
                "--scope",
                GRAPH,
            ],
            vec![("S", "x")],
            "cannot be used with",
        ),
    ];
    for (args, env, expected) in cases {
        let run = secret_sync(&args, &env).await;
        assert_eq!(
            run.code, 2,
            "args {args:?}: exit code; stderr: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(expected),
            "args {args:?}: stderr should mention {expected:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "args {args:?}: nothing on stdout");
    }
}

#[tokio::test]
async fn help_documents_exit_codes() {
    let run = secret_sync(&["token", "--help"], &[]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    assert!(run.stdout.contains("--client-secret-env"), "{}", run.stdout);
}
