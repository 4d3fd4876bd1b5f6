//! The deployment artifacts in `deploy/`, checked without a container engine:
//! the shipped configuration passes the real binary's `check-config` (also as
//! embedded in the Kubernetes ConfigMap); every YAML file parses and says what
//! operators rely on (KRaft Kafka, co-partitioned input topics, probes,
//! graceful termination, the secret from the environment); the Grafana
//! dashboard and Prometheus rules query metrics the engine emits (or, for the
//! dashboard, names as still to come); every `CSPULSE__` variable named in
//! `deploy/` is a configuration key; and the README's configuration reference
//! lists exactly the config struct's keys, defaults and environment names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");
const SECRET: &str = "deploy-test-secret-0123456789abcdef";

/// Metrics the dashboard may chart before the engine emits them (their
/// features are open issues); the dashboard's description must name each.
const PENDING_METRICS: [&str; 4] = [
    "cspulse_ws_connections",
    "cspulse_ws_subscriptions",
    "cspulse_checkpoint_duration_seconds",
    "cspulse_checkpoint_age_seconds",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// The one document of a single-document YAML file.
fn yaml1(rel: &str) -> Yaml {
    let mut docs = yaml(rel);
    assert_eq!(docs.len(), 1, "{rel} should hold one document");
    docs.remove(0)
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("expected a string, found {y:?}"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    match y {
        Yaml::Array(a) => a.iter().map(s).collect(),
        Yaml::String(v) => vec![v.as_str()],
        other => panic!("expected a string or a list of strings, found {other:?}"),
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn deploy_files(extensions: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    files_under(&repo().join("deploy"), &mut all);
    let mut out: Vec<String> = all
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .map(|p| p.strip_prefix(repo()).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `cspulse check-config`, with no `CSPULSE__` variable from the test's own
/// environment but those given.
fn check_config(file: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config");
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CSPULSE__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run cspulse check-config")
}

/// The effective configuration `check-config` printed (the struct, serialized).
fn effective(out: &Output) -> toml::Table {
    assert!(out.status.success(), "check-config failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).parse().expect("check-config prints TOML")
}

fn lookup<'a>(t: &'a toml::Table, dotted: &str) -> &'a toml::Value {
    let mut parts = dotted.split('.');
    let mut v = t.get(parts.next().unwrap()).unwrap_or_else(|| panic!("no {dotted}"));
    for p in parts {
        v = v.get(p).unwrap_or_else(|| panic!("no {dotted}"));
    }
    v
}

fn span(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text:?} is not a duration: {e}"))
}

/// The shipped file with the environment the deployments give it.
fn deploy_config() -> toml::Table {
    effective(&check_config(Some(&repo().join("deploy/cspulse.toml")), &[("CSPULSE__AUTH__JWT_SECRET", SECRET)]))
}

fn checkpoint_interval() -> Duration {
    span(lookup(&deploy_config(), "checkpoint.interval").as_str().unwrap())
}

#[test]
fn the_shipped_config_passes_check_config_with_the_secret_from_the_environment() {
    let file: toml::Table = read("deploy/cspulse.toml").parse().expect("deploy/cspulse.toml is TOML");
    assert!(file.get("auth").and_then(|a| a.get("jwt_secret")).is_none(), "the secret never goes in the file");

    let out = check_config(Some(&repo().join("deploy/cspulse.toml")), &[("CSPULSE__AUTH__JWT_SECRET", SECRET)]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "check-config masks the secret");
    let c = effective(&out);
    assert_eq!(lookup(&c, "state.store").as_str(), Some("redis://redis:6379/0"));
    assert_eq!(lookup(&c, "kafka.brokers").as_str(), Some("kafka:9092"));
    assert_eq!(lookup(&c, "http.listen").as_str(), Some("0.0.0.0:8080"));
    assert_eq!(lookup(&c, "log.format").as_str(), Some("json"));
    assert_eq!(lookup(&c, "auth.insecure").as_bool(), Some(false));

    let without = check_config(Some(&repo().join("deploy/cspulse.toml")), &[]);
    assert_eq!(without.status.code(), Some(2), "without CSPULSE__AUTH__JWT_SECRET the engine must refuse to start");
    assert!(String::from_utf8_lossy(&without.stderr).contains("auth.jwt_secret"));
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let yamls = deploy_files(&["yaml", "yml"]);
    for must in ["deploy/compose.yaml", "deploy/prometheus/prometheus.yml", "deploy/k8s/deployment.yaml"] {
        assert!(yamls.iter().any(|f| f == must), "{must} is missing");
    }
    for rel in &yamls {
        let docs = yaml(rel);
        assert!(!docs.is_empty() && docs.iter().all(|d| matches!(d, Yaml::Hash(_))), "{rel}: expected mappings");
    }
    let jsons = deploy_files(&["json"]);
    assert!(!jsons.is_empty());
    for rel in &jsons {
        serde_json::from_str::<serde_json::Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
}

/// Topic → partitions of every `kafka-topics.sh --create` in a command.
fn created_topics(script: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in script.lines().filter(|l| l.contains("--create")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]);
        let topic = after("--topic").unwrap_or_else(|| panic!("no --topic in {line}"));
        let partitions = after("--partitions").unwrap_or_else(|| panic!("no --partitions in {line}"));
        out.insert(topic.to_owned(), partitions.parse().unwrap());
    }
    out
}

#[test]
fn compose_runs_kraft_kafka_redis_and_cspulse_on_co_partitioned_topics() {
    let compose = yaml1("deploy/compose.yaml");
    let services = &compose["services"];
    for name in ["kafka", "topics", "redis", "cspulse", "prometheus", "grafana", "loadgen"] {
        assert!(!services[name].is_badvalue(), "compose lacks the {name} service");
    }

    // Kafka: the official image, KRaft (no ZooKeeper anywhere).
    let kafka = &services["kafka"];
    assert!(s(&kafka["image"]).starts_with("apache/kafka:"), "official Apache Kafka image");
    let roles = s(&kafka["environment"]["KAFKA_PROCESS_ROLES"]);
    assert!(roles.contains("broker") && roles.contains("controller"), "KRaft combined mode: {roles}");
    assert!(!read("deploy/compose.yaml").contains("ZOOKEEPER"), "KRaft needs no ZooKeeper");
    assert_eq!(s(&kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]), "false");

    // Topics: created on purpose, input topics co-partitioned.
    let config = deploy_config();
    let topic = |role: &str| lookup(&config, &format!("kafka.topics.{role}")).as_str().unwrap().to_owned();
    let created = created_topics(&strings(&services["topics"]["command"]).join("\n"));
    let inputs: BTreeSet<u32> = ["accounts", "usage", "tickets", "revenue"]
        .iter()
        .map(|role| *created.get(&topic(role)).unwrap_or_else(|| panic!("{} is not created", topic(role))))
        .collect();
    assert_eq!(inputs.len(), 1, "input topics must have one partition count: {created:?}");
    assert!(inputs.first().unwrap() > &1, "more than one partition, or there is nothing to co-partition");
    for role in ["alerts", "deadletter"] {
        assert!(created.contains_key(&topic(role)), "{} is not created", topic(role));
    }

    // cspulse: the shipped config, the secret from the environment, Redis state.
    let cspulse = &services["cspulse"];
    let mounts = strings(&cspulse["volumes"]);
    let target = mounts
        .iter()
        .find_map(|m| m.strip_prefix("./cspulse.toml:"))
        .and_then(|rest| rest.split(':').next())
        .expect("cspulse mounts ./cspulse.toml");
    let command = strings(&cspulse["command"]);
    assert_eq!(command, ["serve", "--config", target]);
    let secret = s(&cspulse["environment"]["CSPULSE__AUTH__JWT_SECRET"]);
    assert!(secret.starts_with("${") && secret.contains(":?"), "the secret is a required variable, never a literal");
    assert_eq!(s(&cspulse["depends_on"]["topics"]["condition"]), "service_completed_successfully");
    assert_eq!(s(&cspulse["depends_on"]["redis"]["condition"]), "service_healthy");
    assert!(lookup(&config, "state.store").as_str().unwrap().starts_with("redis://redis:"));
    assert!(span(s(&cspulse["stop_grace_period"])) > checkpoint_interval() + Duration::from_secs(10));
    let build = &cspulse["build"];
    assert!(repo().join("deploy").join(s(&build["context"])).join(s(&build["dockerfile"])).is_file());
    assert_eq!(strings(&services["loadgen"]["profiles"]), ["load"], "the load generator is optional");

    // Every bind-mounted file exists.
    for (name, service) in services.as_hash().unwrap() {
        if let Yaml::Array(volumes) = &service["volumes"] {
            for v in volumes.iter().map(s).filter(|v| v.starts_with("./")) {
                let source = v.split(':').next().unwrap();
                assert!(repo().join("deploy").join(source).exists(), "{}: {source} does not exist", s(name));
            }
        }
    }

    // Prometheus scrapes the port cspulse listens on.
    let listen = lookup(&config, "http.listen").as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    assert!(strings(&cspulse["ports"]).iter().any(|p| p.ends_with(&format!(":{port}"))));
    let prometheus = yaml1("deploy/prometheus/prometheus.yml");
    let job = prometheus["scrape_configs"].as_vec().unwrap().iter().find(|j| s(&j["job_name"]) == "cspulse").unwrap();
    assert_eq!(s(&job["metrics_path"]), "/metrics");
    assert_eq!(strings(&job["static_configs"][0]["targets"]), [format!("cspulse:{port}")]);
}

/// The Kubernetes objects, by kind (one of each).
fn k8s_objects() -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    for rel in deploy_files(&["yaml", "yml"]).iter().filter(|f| f.starts_with("deploy/k8s/")) {
        for doc in yaml(rel) {
            let kind = s(&doc["kind"]).to_owned();
            assert!(out.insert(kind.clone(), doc).is_none(), "two {kind} objects");
        }
    }
    out
}

fn labels_match(selector: &Yaml, labels: &Yaml) {
    let selector = selector.as_hash().expect("a selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[s(k)], v, "selector {} does not match the pod labels", s(k));
    }
}

#[test]
fn kubernetes_deployment_probes_terminates_gracefully_and_takes_its_secret_and_config() {
    let k8s = k8s_objects();
    for kind in ["Kustomization", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(k8s.contains_key(kind), "deploy/k8s lacks a {kind}");
    }

    // kustomize applies every manifest in the folder.
    let kustomization = &k8s["Kustomization"];
    let listed: BTreeSet<&str> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = deploy_files(&["yaml"])
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/k8s/"))
        .filter(|f| *f != "kustomization.yaml")
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, present.iter().map(String::as_str).collect(), "kustomization resources");

    let deployment = &k8s["Deployment"];
    let pod = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1), "one instance until scale-out (issue #8)");
    assert_eq!(s(&deployment["spec"]["strategy"]["type"]), "Recreate");
    labels_match(&deployment["spec"]["selector"]["matchLabels"], &pod["metadata"]["labels"]);
    let spec = &pod["spec"];
    let containers = spec["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Probes on the named port the engine listens on.
    let port = c["ports"].as_vec().unwrap().iter().find(|p| s(&p["name"]) == "http").expect("a port named http");
    let listen = lookup(&deploy_config(), "http.listen").as_str().unwrap().to_owned();
    assert_eq!(listen, format!("0.0.0.0:{}", port["containerPort"].as_i64().unwrap()));
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(&c[probe]["httpGet"]["port"]), "http");
    }

    // Graceful termination outlasts a checkpoint plus the shutdown drain.
    let grace = spec["terminationGracePeriodSeconds"].as_i64().expect("terminationGracePeriodSeconds");
    assert!(grace > 5, "grace period {grace}s");
    assert!(Duration::from_secs(grace as u64) > checkpoint_interval() + Duration::from_secs(10), "{grace}s");

    // Resources, non-root as the image's user.
    for path in [["requests", "cpu"], ["requests", "memory"], ["limits", "memory"]] {
        assert!(!c["resources"][path[0]][path[1]].is_badvalue(), "resources.{}.{} missing", path[0], path[1]);
    }
    assert_eq!(spec["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let uid = spec["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(read("deploy/Dockerfile").contains(&format!("\nUSER {uid}:")), "the image runs as uid {uid}");

    // The JWT secret from the generated Secret, the config from the ConfigMap.
    let env = c["env"].as_vec().unwrap();
    let jwt = env.iter().find(|e| s(&e["name"]) == "CSPULSE__AUTH__JWT_SECRET").expect("the JWT secret variable");
    let secret_ref = &jwt["valueFrom"]["secretKeyRef"];
    let generated = kustomization["secretGenerator"].as_vec().unwrap();
    assert!(generated.iter().any(|g| g["name"] == secret_ref["name"]), "kustomize generates the Secret");
    assert_eq!(s(&secret_ref["key"]), "jwt-secret");
    let config_map = &k8s["ConfigMap"];
    let volume = spec["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"].as_vec().unwrap().iter().find(|m| m["name"] == volume["name"]).unwrap();
    let config_path = format!("{}/cspulse.toml", s(&mount["mountPath"]));
    assert_eq!(strings(&c["args"]), ["serve", "--config", config_path.as_str()]);

    // Service and budget select the pods.
    let service = &k8s["Service"];
    labels_match(&service["spec"]["selector"], &pod["metadata"]["labels"]);
    assert_eq!(s(&service["spec"]["ports"][0]["targetPort"]), "http");
    labels_match(&k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], &pod["metadata"]["labels"]);
}

#[test]
fn the_config_map_embeds_deploy_cspulse_toml_verbatim_and_it_passes_check_config() {
    let k8s = k8s_objects();
    let embedded = s(&k8s["ConfigMap"]["data"]["cspulse.toml"]);
    assert_eq!(embedded, read("deploy/cspulse.toml"), "deploy/k8s/configmap.yaml must embed deploy/cspulse.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cspulse.toml");
    std::fs::write(&path, embedded).unwrap();
    let c = effective(&check_config(Some(&path), &[("CSPULSE__AUTH__JWT_SECRET", SECRET)]));
    assert_eq!(lookup(&c, "state.store").as_str(), Some("redis://redis:6379/0"));
}

/// Every `cspulse_*` metric name written as a string literal in `src/`.
fn emitted_metrics() -> BTreeSet<String> {
    let mut files = Vec::new();
    files_under(&repo().join("src"), &mut files);
    let mut out = BTreeSet::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        out.extend(metric_names(&std::fs::read_to_string(f).unwrap(), "\"cspulse_"));
    }
    out
}

/// Names `cspulse_[a-z0-9_]+` following each occurrence of `start`.
fn metric_names(text: &str, start: &str) -> BTreeSet<String> {
    let skip = start.len() - "cspulse_".len();
    text.match_indices(start)
        .map(|(i, _)| {
            let rest = &text[i + skip..];
            let end =
                rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

/// A queried series name, with a histogram's `_bucket`/`_sum`/`_count` taken off.
fn base_metric(name: &str, known: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        match name.strip_suffix(suffix) {
            Some(base) if known.contains(base) || PENDING_METRICS.contains(&base) => return base.to_owned(),
            _ => {}
        }
    }
    name.to_owned()
}

#[test]
fn grafana_and_prometheus_query_metrics_the_engine_emits() {
    let emitted = emitted_metrics();
    for m in ["cspulse_events_accepted_total", "cspulse_consumer_lag", "cspulse_fold_seconds"] {
        assert!(emitted.contains(m), "the engine no longer emits {m}? found {emitted:?}");
    }

    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/cspulse.json")).unwrap();
    let description = dashboard["description"].as_str().unwrap();
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no queries", panel["title"]));
        assert!(!targets.is_empty());
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            queried.extend(metric_names(expr, "cspulse_").iter().map(|m| base_metric(m, &emitted)));
        }
    }
    for m in &queried {
        assert!(
            emitted.contains(m) || PENDING_METRICS.contains(&m.as_str()),
            "the dashboard queries {m}, which the engine does not emit"
        );
    }
    // Lag, fold rate and latency, alerts, connections, checkpoints.
    for m in [
        "cspulse_consumer_lag",
        "cspulse_events_accepted_total",
        "cspulse_fold_seconds",
        "cspulse_alerts_emitted_total",
        "cspulse_ws_connections",
        "cspulse_checkpoint_age_seconds",
    ] {
        assert!(queried.contains(m), "the dashboard has no panel on {m}");
    }
    for m in PENDING_METRICS.iter().filter(|m| !emitted.contains(**m)) {
        assert!(description.contains(m), "the description must say that {m} is still to come");
    }

    // Alert rules only on what exists today.
    let rules = yaml1("deploy/prometheus/rules.yml");
    for rule in rules["groups"][0]["rules"].as_vec().unwrap() {
        for m in metric_names(s(&rule["expr"]), "cspulse_") {
            assert!(emitted.contains(&base_metric(&m, &emitted)), "rule {} uses unknown {m}", s(&rule["alert"]));
        }
    }

    // Grafana finds the dashboard where compose mounts it.
    let provider = yaml1("deploy/grafana/provisioning/dashboards/cspulse.yml");
    let path = s(&provider["providers"][0]["options"]["path"]);
    let compose = yaml1("deploy/compose.yaml");
    assert!(
        strings(&compose["services"]["grafana"]["volumes"])
            .contains(&format!("./grafana/dashboards:{path}:ro").as_str())
    );
}

/// Every key of `default.toml`, dotted; `kafka.properties` is one key.
fn default_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) if k != "properties" => walk(&key, t, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", &cspulse::config::DEFAULT_TOML.parse().unwrap(), &mut out);
    out
}

fn env_name(key: &str) -> String {
    format!("CSPULSE__{}", key.replace('.', "__").to_uppercase())
}

#[test]
fn every_cspulse_variable_named_in_deploy_is_a_configuration_key() {
    let known: BTreeSet<String> = default_keys().iter().map(|k| env_name(k)).collect();
    let mut files = Vec::new();
    files_under(&repo().join("deploy"), &mut files);
    let mut seen = 0;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        for (i, _) in text.match_indices("CSPULSE__") {
            let rest = &text[i..];
            let end =
                rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('_');
            // Placeholders in prose: CSPULSE__SECTION__KEY, CSPULSE__<SECTION>__<KEY>, CSPULSE__*.
            if name == "CSPULSE" || name == "CSPULSE__SECTION__KEY" {
                continue;
            }
            seen += 1;
            assert!(known.contains(name), "{} names {name}, which is no configuration key", f.display());
        }
    }
    assert!(seen > 0);
}

/// The rows of the README's configuration reference: key → (default, environment).
fn readme_reference() -> BTreeMap<String, (String, String)> {
    let readme = read("README.md");
    let section = readme.split("## Configuration reference").nth(1).expect("README has a configuration reference");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_owned();
        assert!(out.insert(key, (cells[2].to_owned(), cells[3].to_owned())).is_none(), "twice: {line}");
    }
    out
}

/// Does the README's default text say the same as the struct's value?
fn same_default(readme: &str, value: &toml::Value) -> bool {
    let Some(text) = readme.strip_prefix('`').and_then(|r| r.strip_suffix('`')) else { return false };
    match value {
        toml::Value::String(v) => {
            v == text
                // An empty default is written `""`.
                || (v.is_empty() && text == "\"\"")
                || humantime::parse_duration(v).ok().is_some_and(|d| humantime::parse_duration(text).ok() == Some(d))
        }
        toml::Value::Integer(v) => text.parse() == Ok(*v),
        toml::Value::Float(v) => text.parse() == Ok(*v),
        toml::Value::Boolean(v) => text.parse() == Ok(*v),
        toml::Value::Array(v) => v.is_empty() && text == "[]",
        _ => false,
    }
}

/// The reference `deploy/README.md` links to: one row per key of the config
/// struct (as `check-config` serializes it) and no other, each with the
/// struct's default and its environment variable.
#[test]
fn the_configuration_reference_lists_exactly_the_config_structs_keys_defaults_and_variables() {
    let effective = effective(&check_config(None, &[("CSPULSE__AUTH__JWT_SECRET", SECRET)]));
    let mut struct_keys = BTreeMap::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) if k != "properties" => walk(&key, t, out),
                _ => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    walk("", &effective, &mut struct_keys);
    assert_eq!(struct_keys.keys().cloned().collect::<BTreeSet<_>>(), default_keys(), "default.toml is the struct");

    let mut reference = readme_reference();
    // Optional in the struct (absent = the §5.1 rules; no targets), so not serialized.
    let alerts = reference.remove("[[alerts.rules]]").expect("the reference documents [[alerts.rules]]");
    assert!(alerts.1.contains("file only"));
    let targets = reference.remove("[[targets]]").expect("the reference documents [[targets]]");
    assert!(targets.1.contains("file only"));
    let reports = reference.remove("[[reports]]").expect("the reference documents [[reports]]");
    assert!(reports.1.contains("file only"));
    assert_eq!(
        reference.keys().cloned().collect::<BTreeSet<_>>(),
        struct_keys.keys().cloned().collect::<BTreeSet<_>>(),
        "README configuration reference vs the config struct"
    );
    for (key, value) in &struct_keys {
        let (default, env) = &reference[key];
        if key == "kafka.properties" {
            assert!(env.contains("file only"), "{key}: {env}");
            continue;
        }
        assert_eq!(env, &format!("`{}`", env_name(key)), "{key}: environment variable");
        if key == "auth.jwt_secret" || key == "auth.jwt_secret_env" {
            assert_eq!(default, "(none)");
        } else {
            assert!(same_default(default, value), "{key}: README says {default}, the struct {value}");
        }
    }
    assert!(read("deploy/README.md").contains("../README.md#configuration-reference"));
}

#[test]
fn the_dockerfile_builds_from_files_that_exist_and_probes_healthz() {
    let dockerfile = read("deploy/Dockerfile").replace("\\\n", " ");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for l in lines.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).filter(|w| !w.starts_with("--")).collect();
        if l.contains("--from=") {
            continue;
        }
        for source in &words[..words.len() - 1] {
            if !source.contains(['*', '?', '[']) {
                assert!(repo().join(source).exists(), "Dockerfile copies {source}, which does not exist");
            }
        }
    }
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let healthcheck = lines.iter().find(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    assert!(healthcheck.contains(r#"["cspulse", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]"#));
    assert!(runtime.contains("\nEXPOSE 8080\n") && runtime.contains("\nENV CSPULSE__HTTP__LISTEN=0.0.0.0:8080\n"));
    // The dashboard is built in a Node stage and compiled into the binary (build.rs).
    let build = dockerfile.split("\nFROM ").find(|stage| stage.contains("cargo build")).expect("a cargo build stage");
    assert!(
        build.contains("build.rs") && build.contains("ENV CSPULSE_DASHBOARD_DIST="),
        "the binary embeds the dashboard"
    );
    assert!(dockerfile.contains("npm run build"), "the image builds the dashboard client");
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l == "target"), "the build context leaves target/ out");
}
