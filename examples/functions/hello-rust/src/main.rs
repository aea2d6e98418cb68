//! A Lambda function as AWS documents it for Rust: `{"name": ...}` in,
//! a greeting out; `{"fail": true}` returns an error.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if payload["fail"].as_bool() == Some(true) {
        return Err("asked to fail".into());
    }
    Ok(json!({
        "greeting": format!("hello {}", payload["name"].as_str().unwrap_or("world")),
        "request_id": context.request_id,
        "function": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
