//! Secrets (SPEC §18): `check-config` prints the effective configuration with
//! no secret in it, and secrets can be given as `*_env` keys.

use std::io::Write;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

/// `cspulse check-config --config FILE` with only the given `CSPULSE__` or secret variables.
fn check_config(toml: &str, env: &[(&str, &str)]) -> Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check-config", "--config"]).arg(file.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("CSPULSE__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run cspulse check-config")
}

const SECRETS: [&str; 7] = [
    "jwt-0123456789abcdef-SECRET",
    "sasl-PASSWORD-1",
    "keystore-PASSWORD-2",
    "oauth-TOKEN-3",
    "redis-PASSWORD-4",
    "env-PASSWORD-5",
    "ssl-KEY-pem-6",
];

#[test]
fn check_config_shows_no_secret() {
    let config = format!(
        r#"[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.username" = "cspulse"
"sasl.password" = "{}"
"ssl.key.password" = "{}"
"sasl.oauthbearer.client.secret_env" = "CSPULSE_TEST_OAUTH"
"ssl.key.pem" = "{}"
"sasl.oauthbearer.token.endpoint.url" = "https://idp.example.com/token"
[auth]
jwt_secret_env = "CSPULSE_TEST_JWT"
[state]
store = "redis://cspulse:{}@redis.internal:6379/0"
"#,
        SECRETS[1], SECRETS[2], SECRETS[6], SECRETS[4]
    );
    let out = check_config(
        &config,
        &[
            ("CSPULSE_TEST_JWT", SECRETS[0]),
            ("CSPULSE_TEST_OAUTH", SECRETS[3]),
            ("CSPULSE__KAFKA__GROUP_ID", SECRETS[5]),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config failed:\n{stderr}");
    for secret in &SECRETS[..5] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}{stderr}");
    }
    assert!(stdout.contains(SECRETS[5]), "not a secret (a group id), shown as is:\n{stdout}");
    let shown: toml::Table = stdout.parse().expect("check-config prints TOML");
    let props = &shown["kafka"]["properties"];
    assert_eq!(props["sasl.password"].as_str(), Some("********"));
    assert_eq!(props["sasl.oauthbearer.client.secret"].as_str(), Some("********"), "read from its variable");
    assert_eq!(props["sasl.username"].as_str(), Some("cspulse"));
    assert_eq!(shown["auth"]["jwt_secret"].as_str(), Some("********"));
    assert_eq!(shown["auth"]["jwt_secret_env"].as_str(), Some("CSPULSE_TEST_JWT"), "a variable's name is shown");
    assert_eq!(shown["state"]["store"].as_str(), Some("redis://cspulse:********@redis.internal:6379/0"));
}

#[test]
fn a_secret_variable_that_is_not_set_fails_the_check_naming_the_key() {
    let out = check_config("[auth]\njwt_secret_env = \"CSPULSE_TEST_UNSET_VARIABLE\"\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("auth.jwt_secret_env") && stderr.contains("CSPULSE_TEST_UNSET_VARIABLE"), "{stderr}");
}
