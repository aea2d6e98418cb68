//! Managed runtimes: how a package without a `bootstrap` of its own is
//! started, by its function's runtime name, so that a zip made by AWS
//! tooling (a handler module and its dependencies) runs as it is.
//!
//! - `python3.*`: the Python runtime interface client, `python3 -m
//!   awslambdaric HANDLER`, found in `DIR/python` (installed there with
//!   `pip install --target DIR/python awslambdaric`) or else in the
//!   worker's own Python.
//! - `nodejs*`: Node.js (`node` on the worker's `PATH`) running the
//!   runtime loop embedded below (`nodejs.mjs`): the Runtime API's
//!   next/response/error cycle around the handler module, CommonJS or ES.
//! - `provided.*` and anything else: the package's `bootstrap`, as always.
//!
//! A package with a `bootstrap` runs it whatever its runtime (a custom
//! runtime, as the packages built for Sluice's first releases are). The
//! runtime's language version is the worker's: `python3.12` runs on the
//! worker's `python3`, whichever 3.x it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The runtime loop `nodejs*` functions run under.
const NODEJS_LOOP: &str = include_str!("nodejs.mjs");

/// The managed runtimes a worker offers.
#[derive(Clone, Debug, Default)]
pub struct Runtimes {
    /// Where runtime clients are installed (`python/` holds
    /// `awslambdaric`); `None`: only what the worker's own interpreters
    /// have.
    pub dir: Option<PathBuf>,
}

/// How to start one environment's runtime process.
#[derive(Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the function's environment.
    pub env: Vec<(&'static str, OsString)>,
    /// Directories outside the code the runtime reads, which a confined
    /// function must still see.
    pub reads: Vec<PathBuf>,
}

/// Whether `runtime` is a managed one, which starts a package without a
/// `bootstrap`.
pub fn is_managed(runtime: &str) -> bool {
    runtime.starts_with("python3") || runtime.starts_with("nodejs")
}

impl Runtimes {
    /// How to start `code` (an unpacked package) for a function of
    /// `runtime` with `handler`; why it cannot be started, if so.
    pub fn launch(&self, code: &Path, runtime: &str, handler: &str) -> Result<Launch, String> {
        let bootstrap = code.join("bootstrap");
        if bootstrap.is_file() {
            return Ok(Launch {
                program: bootstrap,
                args: Vec::new(),
                env: Vec::new(),
                reads: Vec::new(),
            });
        }
        if runtime.starts_with("python3") {
            let mut path = OsString::from(code);
            let mut reads = Vec::new();
            if let Some(dir) = &self.dir {
                // The function runs in its code directory: a relative
                // directory would be taken from there.
                let python = std::path::absolute(dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .join("python");
                if !python.join("awslambdaric").is_dir() {
                    return Err(format!(
                        "the {runtime} runtime needs the Python runtime interface client in {} (pip install --target {} awslambdaric)",
                        python.display(),
                        python.display()
                    ));
                }
                path.push(":");
                path.push(&python);
                reads.push(python);
            }
            return Ok(Launch {
                program: "python3".into(),
                args: vec!["-m".into(), "awslambdaric".into(), handler.into()],
                env: vec![("PYTHONPATH", path)],
                reads,
            });
        }
        if runtime.starts_with("nodejs") {
            return Ok(Launch {
                program: "node".into(),
                args: vec![
                    "--input-type=module".into(),
                    "--eval".into(),
                    NODEJS_LOOP.into(),
                ],
                env: Vec::new(),
                reads: Vec::new(),
            });
        }
        Err(format!(
            "the code has no bootstrap file ({}), which the {} runtime runs",
            bootstrap.display(),
            if runtime.is_empty() {
                "custom"
            } else {
                runtime
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_wins_and_the_runtime_picks_the_client_otherwise() {
        let code = tempfile::tempdir().unwrap();
        let none = Runtimes::default();
        let python = none
            .launch(code.path(), "python3.12", "app.handler")
            .unwrap();
        assert_eq!(python.program, PathBuf::from("python3"));
        assert_eq!(python.args, ["-m", "awslambdaric", "app.handler"]);
        assert_eq!(python.env[0].1, code.path().as_os_str());
        assert_eq!(
            none.launch(code.path(), "nodejs20.x", "index.handler")
                .unwrap()
                .program,
            PathBuf::from("node")
        );
        let missing = none
            .launch(code.path(), "provided.al2023", "x")
            .unwrap_err();
        assert!(missing.contains("no bootstrap"), "{missing}");
        // A runtime directory without the client is refused by name.
        let dir = tempfile::tempdir().unwrap();
        let configured = Runtimes {
            dir: Some(dir.path().to_path_buf()),
        };
        let e = configured
            .launch(code.path(), "python3.11", "app.handler")
            .unwrap_err();
        assert!(e.contains("awslambdaric"), "{e}");
        std::fs::create_dir_all(dir.path().join("python/awslambdaric")).unwrap();
        let ok = configured
            .launch(code.path(), "python3.11", "app.handler")
            .unwrap();
        assert!(ok.env[0].1.to_string_lossy().ends_with("/python"));
        std::fs::write(code.path().join("bootstrap"), "#!/bin/sh\n").unwrap();
        assert_eq!(
            configured
                .launch(code.path(), "python3.11", "app.handler")
                .unwrap()
                .program,
            code.path().join("bootstrap")
        );
    }
}
