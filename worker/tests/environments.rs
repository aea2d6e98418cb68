//! Execution environments running an unmodified Python Lambda function
//! through the official runtime interface client (`awslambdaric`, installed
//! by `.ci/run` and `scripts/test`), from its own `bootstrap` or on the
//! managed runtime; Node.js functions on the managed runtime; and a shell
//! runtime that crashes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_worker::runtimes::Runtimes;
use sluice_worker::{Environment, FunctionConfig, FunctionSpec, InvokeError, Invoked, Pool};

const APP: &str = r#"
import os, time

def handler(event, context):
    return {"echo": event, "function": context.function_name,
            "version": context.function_version, "pid": os.getpid(),
            "memory": context.memory_limit_in_mb}

def fail(event, context):
    raise ValueError("bad input: " + str(event["n"]))

def slow(event, context):
    time.sleep(30)
    return "too late"

def hog(event, context):
    chunks = []
    for _ in range(64):
        chunks.append(bytearray(16 << 20))
    return "allocated 1 GiB"

def grab(event, context):
    block = bytearray(1 << 30)
    return "allocated %d bytes at once" % len(block)

def mark_tmp(event, context):
    path = os.path.join(os.environ["TMPDIR"], "mark")
    existed = os.path.exists(path)
    with open(path, "w") as f:
        f.write("x")
    return {"existed": existed}
"#;

/// A directory for a test's code and environments, outside /tmp (which a
/// root-run environment replaces with its own).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn python_code(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    // The bootstrap the spec gives for Python: the runtime client takes the
    // handler as its argument and imports it from the working directory.
    write_executable(
        &dir.join("bootstrap"),
        "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
    );
}

fn config(handler: &str, timeout_s: u32) -> FunctionConfig {
    FunctionConfig {
        name: "echo".into(),
        version: "$LATEST".into(),
        arn: "arn:aws:lambda:us-east-1:000000000000:function:echo".into(),
        handler: handler.into(),
        memory_mb: 256,
        timeout_s,
        ephemeral_mb: 64,
        region: "us-east-1".into(),
        environment: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        runtime: String::new(),
    }
}

/// Starts `code` in `dir` with the default sandbox and the runtime clients
/// of `runtimes`.
async fn launch(
    code: &Path,
    dir: &Path,
    config: FunctionConfig,
    runtimes: &Runtimes,
) -> Result<Environment, InvokeError> {
    Environment::start(code, dir, config, &Default::default(), runtimes).await
}

async fn start(root: &Path, handler: &str, timeout_s: u32) -> Environment {
    let code = root.join("code");
    python_code(&code);
    let config = config(handler, timeout_s);
    launch(&code, &root.join("env"), config, &Default::default())
        .await
        .unwrap()
}

/// `root`/code holding `files` (path, text): a package without the
/// Python bootstrap.
fn package(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    let code = root.join("code");
    std::fs::create_dir_all(&code).unwrap();
    for (name, text) in files {
        let path = code.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    code
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// Invokes `env` with `event`, failing the test if the environment (not
/// the function) fails.
async fn invoke(env: &mut Environment, id: &str, event: &'static [u8]) -> Invoked {
    env.invoke(id, Bytes::from_static(event)).await.unwrap()
}

/// What the function in `env` answers `event` with, as JSON; anything but
/// an answer fails the test, showing the environment's log.
async fn answer(env: &mut Environment, id: &str, event: &'static [u8]) -> serde_json::Value {
    match invoke(env, id, event).await {
        Invoked::Ok(body) => json(&body),
        other => panic!("{other:?}\n{}", env.log().join("\n")),
    }
}

/// The error document the function in `env` fails `event` with; anything
/// else fails the test.
async fn function_error(
    env: &mut Environment,
    id: &str,
    event: &'static [u8],
) -> serde_json::Value {
    match invoke(env, id, event).await {
        Invoked::FunctionError(doc) => json(&doc),
        other => panic!("not a function error: {other:?}\n{}", env.log().join("\n")),
    }
}

#[tokio::test]
async fn a_python_function_answers_and_its_environment_stays_warm() {
    let root = scratch();
    let mut env = start(root.path(), "app.handler", 10).await;
    let v = answer(&mut env, "req-1", br#"{"n": 1}"#).await;
    assert_eq!(v["echo"]["n"], 1);
    assert_eq!(v["function"], "echo");
    assert_eq!(v["version"], "$LATEST");
    assert_eq!(v["memory"], "256");
    let second = answer(&mut env, "req-2", b"[]").await;
    // The second invocation reuses the process: a warm start.
    assert_eq!(second["pid"], v["pid"]);
    assert_eq!(second["echo"], serde_json::json!([]));
    // The log is the last invocation's.
    let log = env.log().join("\n");
    assert!(log.contains("START RequestId: req-2"), "{log}");
    assert!(log.contains("END RequestId: req-2"), "{log}");
    assert!(!log.contains("req-1"), "{log}");
    env.stop().await;
}

#[tokio::test]
async fn a_raised_error_comes_back_as_a_function_error() {
    let root = scratch();
    let mut env = start(root.path(), "app.fail", 10).await;
    let v = function_error(&mut env, "req-e", br#"{"n": 7}"#).await;
    assert_eq!(v["errorType"], "ValueError", "{v}");
    assert_eq!(v["errorMessage"], "bad input: 7", "{v}");
    // A function error leaves the environment usable.
    assert!(env.is_alive());
    env.stop().await;
}

#[tokio::test]
async fn a_function_past_its_timeout_is_killed() {
    let root = scratch();
    let mut env = start(root.path(), "app.slow", 1).await;
    let pid = env.pid().unwrap();
    let started = Instant::now();
    let v = function_error(&mut env, "req-t", b"{}").await;
    let took = started.elapsed();
    assert_eq!(v["errorType"], "Sandbox.Timedout");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Task timed out after 1.00 seconds"),
        "{v}"
    );
    eprintln!("timeout of 1 s answered after {took:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    // The measured overshoot is printed above; the bound leaves room for a
    // busy machine.
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The process is gone, and the environment refuses more work.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(matches!(
        env.invoke("req-after", Bytes::from_static(b"{}")).await,
        Err(InvokeError::Dead)
    ));
}

#[tokio::test]
async fn a_runtime_that_exits_fails_the_invocation_at_once() {
    let root = scratch();
    let code = package(root.path(), &[]);
    write_executable(
        &code.join("bootstrap"),
        "#!/bin/sh\necho starting\nexit 3\n",
    );
    let config = config("x", 30);
    let mut env = launch(&code, &root.path().join("env"), config, &Default::default())
        .await
        .unwrap();
    let started = Instant::now();
    let v = function_error(&mut env, "req-c", b"{}").await;
    assert_eq!(v["errorType"], "Runtime.ExitError", "{v}");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!env.is_alive());
    assert!(env.log().iter().any(|l| l == "starting"));
}

#[tokio::test]
async fn code_without_a_bootstrap_does_not_start() {
    let root = scratch();
    let code = package(root.path(), &[]);
    let config = config("x", 3);
    match launch(&code, &root.path().join("env"), config, &Default::default()).await {
        Err(InvokeError::Start(why)) => assert!(why.contains("bootstrap"), "{why}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started without a bootstrap"),
    }
}

#[tokio::test]
async fn each_environment_has_its_own_tmp() {
    let root = scratch();
    let code = root.path().join("code");
    python_code(&code);
    // Two environments of the one package, each in its own directory.
    let start_in = |dir: &str| {
        let (code, dir) = (&code, root.path().join(dir));
        async move {
            let config = config("app.mark_tmp", 10);
            launch(code, &dir, config, &Default::default())
                .await
                .unwrap()
        }
    };
    let mut a = start_in("a").await;
    let mut b = start_in("b").await;
    let existed = |v: serde_json::Value| v["existed"].as_bool().unwrap();
    assert!(!existed(answer(&mut a, "1", b"{}").await));
    assert!(existed(answer(&mut a, "2", b"{}").await));
    assert!(!existed(answer(&mut b, "3", b"{}").await));
    if is_root() {
        // As root, /tmp itself is the environment's own tmpfs: nothing
        // written there shows outside.
        assert!(!Path::new("/tmp/mark").exists());
    }
    a.stop().await;
    b.stop().await;
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_function_growing_past_its_memory_size_is_killed_and_reported() {
    let root = scratch();
    let mut env = start(root.path(), "app.hog", 30).await;
    // A 256 MB function allocating 1 GiB.
    let v = function_error(&mut env, "req-m", b"{}").await;
    if env_has_cgroup() {
        // The kernel killed it: the runtime exited.
        assert_eq!(v["errorType"], "Runtime.ExitError", "{v}");
    } else {
        assert_eq!(v["errorType"], "Runtime.OutOfMemory", "{v}");
        let message = v["errorMessage"].as_str().unwrap();
        eprintln!("{message}");
        assert!(message.contains("memory size 256 MB exceeded"), "{message}");
        assert!(env.log().join("\n").contains("signal: killed"));
    }
    // Killed: the environment is gone, the next invocation needs another.
    assert!(!env.is_alive());
}

#[tokio::test]
async fn one_allocation_far_past_the_memory_size_fails_inside_the_function() {
    if env_has_cgroup() {
        return; // the backstop below is the rlimit path's
    }
    let root = scratch();
    let mut env = start(root.path(), "app.grab", 30).await;
    // A 256 MB function allocating 1 GiB at once: RLIMIT_DATA at twice the
    // memory size refuses the allocation itself.
    let v = function_error(&mut env, "req-g", b"{}").await;
    assert_eq!(v["errorType"], "MemoryError");
    assert!(env.is_alive());
}

/// Whether this host caps memory with cgroup v2 (else the watchdog and
/// rlimit do).
fn env_has_cgroup() -> bool {
    sluice_worker::cgroup::base().is_some()
}

#[tokio::test]
async fn the_pool_reuses_warm_environments_and_reaps_idle_ones() {
    let root = scratch();
    let code = root.path().join("src");
    python_code(&code);
    let zip = {
        // The pool takes zip packages: build one from the directory.
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for name in ["app.py", "bootstrap"] {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
            w.start_file(name, opts).unwrap();
            std::io::Write::write_all(&mut w, &std::fs::read(code.join(name)).unwrap()).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&zip))
    };
    let pool = Pool::new(
        &root.path().join("pool"),
        Default::default(),
        Default::default(),
    );
    let spec = FunctionSpec {
        key: "echo#1".into(),
        code_sha256: sha,
        config: config("app.handler", 10),
    };
    let fetches = std::sync::atomic::AtomicUsize::new(0);
    let fetch = || async {
        fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(zip.clone())
    };
    // Whether invocation `id` started a fresh environment.
    let cold = |id| {
        let invoked = pool.invoke(&spec, fetch, id, Bytes::from_static(b"{}"));
        async move { invoked.await.unwrap().cold }
    };
    assert!(cold("1").await);
    assert!(
        !cold("2").await,
        "the second invocation reuses the environment"
    );
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "code fetched once"
    );
    assert_eq!(pool.idle_count("echo#1"), 1);
    // Not idle long enough: kept.
    assert_eq!(pool.reap(Duration::from_secs(60)).await, 0);
    assert_eq!(pool.reap(Duration::ZERO).await, 1);
    assert_eq!(pool.idle_count("echo#1"), 0);
    assert!(cold("3").await, "a reaped environment is gone");
}

/// Starts `code` (no `bootstrap`) on the managed runtime `runtime`.
async fn managed(root: &Path, code: &Path, runtime: &str, handler: &str) -> Environment {
    managed_with(root, code, runtime, handler, &Default::default()).await
}

/// [`managed`] with the runtime clients of `runtimes`.
async fn managed_with(
    root: &Path,
    code: &Path,
    runtime: &str,
    handler: &str,
    runtimes: &Runtimes,
) -> Environment {
    let mut config = config(handler, 10);
    config.runtime = runtime.into();
    launch(code, &root.join("env"), config, runtimes)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_python_package_without_a_bootstrap_runs_on_the_managed_runtime() {
    let root = scratch();
    // As AWS tooling zips it: the handler module and nothing else.
    let code = package(root.path(), &[("app.py", APP)]);
    let mut env = managed(root.path(), &code, "python3.12", "app.handler").await;
    let v = answer(&mut env, "req-1", br#"{"n": 7}"#).await;
    assert_eq!(v["echo"]["n"], 7);
    assert_eq!(v["function"], "echo");
    env.stop().await;
}

const NODE_ESM: &str = r#"
export const handler = async (event, context) => ({
  echo: event, function: context.functionName, version: context.functionVersion,
  greeting: process.env.GREETING, left: context.getRemainingTimeInMillis() > 0,
});
export const fail = async () => { throw new TypeError("bad input"); };
"#;

const NODE_CJS: &str = r#"
exports.handler = (event, context, callback) => callback(null, { cjs: event.n * 2 });
"#;

#[tokio::test]
async fn a_nodejs_package_runs_on_the_managed_runtime_as_es_or_commonjs_modules() {
    let root = scratch();
    let code = package(
        root.path(),
        &[("index.mjs", NODE_ESM), ("lib/cjs.js", NODE_CJS)],
    );
    let mut env = managed(root.path(), &code, "nodejs20.x", "index.handler").await;
    let v = answer(&mut env, "req-1", br#"{"n": 3}"#).await;
    assert_eq!(v["echo"]["n"], 3);
    assert_eq!(v["function"], "echo");
    assert_eq!(v["version"], "$LATEST");
    assert_eq!(v["greeting"], "hi");
    assert_eq!(v["left"], true);
    env.stop().await;

    let mut failing = managed(&root.path().join("f"), &code, "nodejs20.x", "index.fail").await;
    let v = function_error(&mut failing, "req-2", b"{}").await;
    assert_eq!(v["errorType"], "TypeError");
    assert_eq!(v["errorMessage"], "bad input");
    failing.stop().await;

    let cjs_root = root.path().join("c");
    let mut cjs = managed(&cjs_root, &code, "nodejs20.x", "lib/cjs.handler").await;
    assert_eq!(answer(&mut cjs, "req-3", br#"{"n": 21}"#).await["cjs"], 42);
    cjs.stop().await;
}

#[tokio::test]
async fn a_nodejs_handler_that_is_not_exported_fails_its_start_by_name() {
    let root = scratch();
    let code = package(root.path(), &[("index.mjs", NODE_ESM)]);
    let mut env = managed(root.path(), &code, "nodejs20.x", "index.nothing").await;
    let e = env.wait_ready(Duration::from_secs(10)).await.unwrap_err();
    let text = format!("{e:?} {}", env.log().join("\n"));
    assert!(
        text.contains("index.nothing is undefined or not exported"),
        "{text}"
    );
}

#[tokio::test]
async fn a_runtime_directory_under_tmp_stays_visible_to_a_confined_function() {
    // As root a function gets a private /tmp, which would hide a runtime
    // directory there. A stand-in for the runtime client says it ran.
    let runtimes = tempfile::tempdir_in("/tmp").unwrap();
    let client = runtimes.path().join("python/awslambdaric");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::write(client.join("__init__.py"), "").unwrap();
    std::fs::write(
        client.join("__main__.py"),
        "print('stand-in runtime client ran', flush=True)\nraise SystemExit(3)\n",
    )
    .unwrap();
    for dir in [runtimes.path(), &runtimes.path().join("python"), &client] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let root = scratch();
    let code = package(root.path(), &[("app.py", APP)]);
    let runtimes = Runtimes {
        dir: Some(runtimes.path().to_path_buf()),
    };
    let mut env = managed_with(root.path(), &code, "python3.12", "app.handler", &runtimes).await;
    let e = env.wait_ready(Duration::from_secs(10)).await.unwrap_err();
    let log = format!("{e:?} {}", env.log().join("\n"));
    assert!(log.contains("stand-in runtime client ran"), "{log}");
}
