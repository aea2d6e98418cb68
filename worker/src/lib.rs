//! Sluice workers: where functions run.
//!
//! A worker holds no Raft state (the spec's invariant 6). It runs each
//! function in an [`environment::Environment`]: a private directory with the
//! function's code and its own temporary space, a child process started
//! from the code's `bootstrap`, and the Lambda Runtime API
//! ([`runtime_api`]) served to that process on a loopback port. Because the
//! process speaks the same API as on AWS Lambda, a function built with the
//! official runtime interface clients (Python `awslambdaric`, Rust
//! `lambda_runtime`, ...) runs unmodified.
//!
//! This crate is the first part of functions (issue 8): the execution
//! environment. The function registry in the cluster, the worker's
//! registration and the routing of invocations come next.

pub mod environment;
pub mod pool;
pub mod runtime_api;

pub use environment::{Environment, FunctionConfig, InvokeError, Invoked};
pub use pool::{unpacked_size, FunctionSpec, Pool, PoolError, Ran, UNPACKED_MAX};
