//! Builds the dashboard client (`dashboards-client/`, npm + Vite) and embeds
//! the result in the binary: `src/http/assets.rs` includes the generated
//! `$OUT_DIR/dashboard_assets.rs`, a table of (path, content type, bytes).
//!
//! - By default it runs `npm ci` (only when `node_modules` is missing or was
//!   installed from another `package-lock.json`) and `npm run build` with the
//!   output in `$OUT_DIR`, so `cargo run -- demo` stays one command on a
//!   machine with Node.js >= 20.19 and npm.
//! - `CSPULSE_DASHBOARD_DIST=<dir>` embeds an already built `dist/` instead
//!   and needs no Node.js (the container build does this).
//!
//! No dependencies: std only.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const CLIENT: &str = "dashboards-client";
/// What the client build reads; a change to any of them rebuilds it.
const INPUTS: &[&str] = &["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CSPULSE_DASHBOARD_DIST");
    let dist = match env::var_os("CSPULSE_DASHBOARD_DIST").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            println!("cargo:rerun-if-changed={}", dir.display());
            if !dir.join("index.html").is_file() {
                fail(&format!(
                    "CSPULSE_DASHBOARD_DIST={} has no index.html (build the client with `npm run build`)",
                    dir.display()
                ));
            }
            dir
        }
        None => {
            let client = manifest.join(CLIENT);
            for input in INPUTS {
                println!("cargo:rerun-if-changed={}", client.join(input).display());
            }
            let dist = out.join("dashboard");
            build_client(&client, &dist);
            dist
        }
    };
    embed(&dist, &out.join("dashboard_assets.rs"));
}

fn fail(message: &str) -> ! {
    eprintln!("\nerror: cannot build the dashboard client: {message}\n");
    panic!("dashboard client build failed: {message}");
}

fn npm() -> Command {
    Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
}

/// Node.js is needed only here; say exactly what to install when it is missing.
fn check_node() {
    const HOW: &str = "install Node.js >= 20.19 with npm (https://nodejs.org/en/download, or your package \
                       manager / nvm), or set CSPULSE_DASHBOARD_DIST to an already built dashboards-client/dist";
    let version = Command::new("node").arg("--version").output();
    let Ok(version) = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) else {
        fail(&format!("`node` was not found: {HOW}"));
    };
    let parts: Vec<u32> = version.trim_start_matches('v').split('.').filter_map(|p| p.parse().ok()).collect();
    if parts.len() < 2 || (parts[0], parts[1]) < (20, 19) {
        fail(&format!("Node.js {version} is too old for Vite: {HOW}"));
    }
    if npm().arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        fail(&format!("`npm` was not found: {HOW}"));
    }
}

fn run(mut cmd: Command, dir: &Path, what: &str) {
    let status = cmd.current_dir(dir).env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1").status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("`{what}` in {} exited with {s}", dir.display())),
        Err(e) => fail(&format!("cannot run `{what}`: {e}")),
    }
}

/// Serialises `npm ci` between concurrent cargo builds (check, test, release
/// share one `node_modules`). A lock older than 10 minutes is stale.
struct Lock(PathBuf);

impl Lock {
    fn take(path: PathBuf) -> Lock {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            match fs::create_dir(&path) {
                Ok(()) => return Lock(path),
                Err(_) if Instant::now() > deadline => fail(&format!("{} stayed locked", path.display())),
                Err(_) => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > Duration::from_secs(600)) {
                        let _ = fs::remove_dir(&path);
                    } else {
                        std::thread::sleep(Duration::from_millis(250));
                    }
                }
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn build_client(client: &Path, dist: &Path) {
    check_node();
    let lock_file = client.join("package-lock.json");
    let stamp = client.join("node_modules").join(".cspulse-installed-lock.json");
    {
        let _lock = Lock::take(client.join(".npm-install.lock"));
        let wanted = fs::read(&lock_file).unwrap_or_else(|e| fail(&format!("{}: {e}", lock_file.display())));
        if fs::read(&stamp).ok().as_deref() != Some(&wanted[..]) {
            let mut ci = npm();
            ci.args(["ci", "--no-audit", "--no-fund"]);
            run(ci, client, "npm ci");
            fs::write(&stamp, &wanted).unwrap_or_else(|e| fail(&format!("{}: {e}", stamp.display())));
        }
    }
    let mut build = npm();
    build.args(["run", "build", "--", "--outDir"]).arg(dist).args(["--emptyOutDir", "--logLevel", "warn"]);
    run(build, client, "npm run build");
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a: a build id that changes with any byte of the assets.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn embed(dist: &Path, generated: &Path) {
    let mut paths = Vec::new();
    files(dist, &mut paths);
    let mut code =
        String::from("// Generated by build.rs from the dashboard client build.\npub static ASSETS: &[Asset] = &[\n");
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for path in &paths {
        let rel = path.strip_prefix(dist).expect("under dist").to_string_lossy().replace('\\', "/");
        let bytes = fs::read(path).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        fnv(&mut hash, rel.as_bytes());
        fnv(&mut hash, &bytes);
        writeln!(
            code,
            "    Asset {{ path: {:?}, content_type: {:?}, bytes: include_bytes!({:?}) }},",
            format!("/{rel}"),
            mime(path),
            path.display().to_string()
        )
        .expect("write to a String");
    }
    writeln!(code, "];\npub const BUILD_ID: &str = \"{hash:016x}\";").expect("write to a String");
    fs::write(generated, code).unwrap_or_else(|e| fail(&format!("{}: {e}", generated.display())));
}
