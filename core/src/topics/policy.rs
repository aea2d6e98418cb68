//! Delivery policies: how often and how fast deliveries to HTTP endpoints
//! are retried, in the JSON shape SNS uses.
//!
//! A subscription's `DeliveryPolicy` is
//! `{"healthyRetryPolicy": {...}, "requestPolicy": {"headerContentType": ..}}`;
//! a topic's is `{"http": {"defaultHealthyRetryPolicy": {...},
//! "disableSubscriptionOverrides": bool, "defaultRequestPolicy": {...}}}`.
//! A failed delivery is retried `numRetries` times: first `numNoDelayRetries`
//! at once, then `numMinDelayRetries` after `minDelayTarget` seconds, then a
//! back-off phase from `minDelayTarget` to `maxDelayTarget` shaped by
//! `backoffFunction`, then `numMaxDelayRetries` after `maxDelayTarget`.
//! `throttlePolicy` is accepted and kept, not enforced.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DomainError;

/// The retry schedule of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Shortest delay, seconds (1..=max).
    pub min_delay: u32,
    /// Longest delay, seconds (..=3600).
    pub max_delay: u32,
    /// Retries in all (0..=100).
    pub num_retries: u32,
    /// Retries at once.
    pub no_delay: u32,
    /// Retries after the shortest delay.
    pub min_delay_retries: u32,
    /// Retries after the longest delay, at the end.
    pub max_delay_retries: u32,
    /// The back-off phase's shape.
    pub backoff: Backoff,
}

/// How delays grow in the back-off phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backoff {
    /// In equal steps.
    Linear,
    /// Quadratically: slowly, then fast.
    Arithmetic,
    /// By a constant factor.
    Geometric,
    /// Doubling steps.
    Exponential,
}

impl Default for RetryPolicy {
    /// The SNS default for HTTP/S: three retries 20 seconds apart.
    fn default() -> Self {
        RetryPolicy {
            min_delay: 20,
            max_delay: 20,
            num_retries: 3,
            no_delay: 0,
            min_delay_retries: 0,
            max_delay_retries: 0,
            backoff: Backoff::Linear,
        }
    }
}

impl RetryPolicy {
    /// The delay in milliseconds before retry number `retry` (1-based), or
    /// `None` when the retries are used up.
    pub fn delay_ms(&self, retry: u32) -> Option<u64> {
        if retry == 0 || retry > self.num_retries {
            return None;
        }
        let min = u64::from(self.min_delay) * 1000;
        let max = u64::from(self.max_delay) * 1000;
        let backoff_n = self
            .num_retries
            .saturating_sub(self.no_delay + self.min_delay_retries + self.max_delay_retries);
        let mut k = retry;
        if k <= self.no_delay {
            return Some(0);
        }
        k -= self.no_delay;
        if k <= self.min_delay_retries {
            return Some(min);
        }
        k -= self.min_delay_retries;
        if k <= backoff_n {
            // Integer arithmetic, or only IEEE-exact float operations: the
            // delay becomes replicated state, so every node must compute
            // the same one (no platform `powf`).
            let (n, k) = (u128::from(backoff_n), u128::from(k));
            let (lo, hi) = (u128::from(min), u128::from(max));
            let span = hi - lo;
            let d = match self.backoff {
                Backoff::Linear => lo + span * k / n,
                Backoff::Arithmetic => lo + span * k * k / (n * n),
                Backoff::Geometric => {
                    let t = k as f64 / n as f64;
                    let d = lo as f64 * exp(t * ln(hi as f64 / lo as f64));
                    d.round() as u128
                }
                Backoff::Exponential => {
                    // (2^k - 1) / (2^n - 1) of the span; n <= 100 fits.
                    lo + span * ((1u128 << k) - 1) / ((1u128 << n) - 1)
                }
            };
            return Some(d.clamp(lo, hi) as u64);
        }
        Some(max)
    }

    fn to_json(self) -> Value {
        serde_json::json!({
            "minDelayTarget": self.min_delay,
            "maxDelayTarget": self.max_delay,
            "numRetries": self.num_retries,
            "numNoDelayRetries": self.no_delay,
            "numMinDelayRetries": self.min_delay_retries,
            "numMaxDelayRetries": self.max_delay_retries,
            "backoffFunction": match self.backoff {
                Backoff::Linear => "linear",
                Backoff::Arithmetic => "arithmetic",
                Backoff::Geometric => "geometric",
                Backoff::Exponential => "exponential",
            },
        })
    }
}

/// Natural logarithm from additions, multiplications and divisions only
/// (correctly rounded in IEEE 754, so the same on every platform), for
/// `x >= 1`.
fn ln(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let (mut m, mut e) = (x, 0.0);
    while m >= 2.0 {
        m /= 2.0;
        e += 1.0;
    }
    // ln m = 2 atanh(z), z = (m - 1) / (m + 1) <= 1/3.
    let z = (m - 1.0) / (m + 1.0);
    let (mut term, mut sum) = (z, 0.0);
    for i in 0..40 {
        sum += term / (2 * i + 1) as f64;
        term *= z * z;
    }
    2.0 * sum + e * LN2
}

/// `e^y` for `0 <= y <= 20`, by the same rule as [`ln`].
fn exp(y: f64) -> f64 {
    // e^y = (e^(y/2^10))^(2^10): a short series, then squarings.
    let r = y / 1024.0;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..20 {
        term *= r / i as f64;
        sum += term;
    }
    for _ in 0..10 {
        sum *= sum;
    }
    sum
}

/// A parsed delivery policy (subscription shape, or a topic's `http` part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeliveryPolicy {
    /// Retries, when given.
    pub retry: Option<RetryPolicy>,
    /// `Content-Type` of the POST, when given.
    pub content_type: Option<String>,
    /// Topic only: subscriptions' own policies are ignored.
    pub disable_overrides: bool,
}

impl DeliveryPolicy {
    /// The policy in force for a subscription: its own unless the topic
    /// disables overrides, then the topic's, then the defaults.
    pub fn effective(topic: Option<&DeliveryPolicy>, sub: Option<&DeliveryPolicy>) -> Self {
        let sub = sub.filter(|_| !topic.is_some_and(|t| t.disable_overrides));
        DeliveryPolicy {
            retry: sub
                .and_then(|s| s.retry)
                .or(topic.and_then(|t| t.retry))
                .or(Some(RetryPolicy::default())),
            content_type: sub
                .and_then(|s| s.content_type.clone())
                .or(topic.and_then(|t| t.content_type.clone())),
            disable_overrides: false,
        }
    }

    /// The effective policy as the `EffectiveDeliveryPolicy` attribute shows it.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "healthyRetryPolicy": self.retry.unwrap_or_default().to_json(),
        });
        if let Some(ct) = &self.content_type {
            v["requestPolicy"] = serde_json::json!({ "headerContentType": ct });
        }
        v.to_string()
    }
}

fn bad(field: &str, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("InvalidParameter", field, rule)
}

fn retry(field: &str, v: &Value) -> Result<RetryPolicy, DomainError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad(field, "must be a JSON object"))?;
    let d = RetryPolicy::default();
    let num = |name: &str, default: u32, max: u32| -> Result<u32, DomainError> {
        match o.get(name) {
            None => Ok(default),
            Some(x) => x
                .as_u64()
                .filter(|n| *n <= u64::from(max))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    bad(
                        &format!("{field}.{name}"),
                        format!("must be a whole number from 0 to {max}, got {x}"),
                    )
                }),
        }
    };
    for k in o.keys() {
        if ![
            "minDelayTarget",
            "maxDelayTarget",
            "numRetries",
            "numNoDelayRetries",
            "numMinDelayRetries",
            "numMaxDelayRetries",
            "backoffFunction",
        ]
        .contains(&k.as_str())
        {
            return Err(bad(field, format!("unknown setting {k:?}")));
        }
    }
    let p = RetryPolicy {
        min_delay: num("minDelayTarget", d.min_delay, 3600)?,
        max_delay: num("maxDelayTarget", d.max_delay, 3600)?,
        num_retries: num("numRetries", d.num_retries, 100)?,
        no_delay: num("numNoDelayRetries", 0, 100)?,
        min_delay_retries: num("numMinDelayRetries", 0, 100)?,
        max_delay_retries: num("numMaxDelayRetries", 0, 100)?,
        backoff: match o.get("backoffFunction") {
            None => Backoff::Linear,
            Some(Value::String(s)) => match s.as_str() {
                "linear" => Backoff::Linear,
                "arithmetic" => Backoff::Arithmetic,
                "geometric" => Backoff::Geometric,
                "exponential" => Backoff::Exponential,
                other => {
                    return Err(bad(
                        &format!("{field}.backoffFunction"),
                        format!(
                            "must be linear, arithmetic, geometric or exponential, got {other:?}"
                        ),
                    ))
                }
            },
            Some(other) => {
                return Err(bad(
                    &format!("{field}.backoffFunction"),
                    format!("must be a string, got {other}"),
                ))
            }
        },
    };
    if p.min_delay == 0 || p.min_delay > p.max_delay {
        return Err(bad(
            field,
            "minDelayTarget must be at least 1 and at most maxDelayTarget",
        ));
    }
    if p.no_delay + p.min_delay_retries + p.max_delay_retries > p.num_retries {
        return Err(bad(
            field,
            "numNoDelayRetries + numMinDelayRetries + numMaxDelayRetries must not exceed numRetries",
        ));
    }
    Ok(p)
}

fn content_type(field: &str, v: &Value) -> Result<Option<String>, DomainError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad(field, "must be a JSON object"))?;
    match o.get("headerContentType") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 && !s.contains(['\r', '\n']) => {
            Ok(Some(s.clone()))
        }
        Some(other) => Err(bad(
            &format!("{field}.headerContentType"),
            format!("must be a media type, got {other}"),
        )),
    }
}

fn json_object(field: &str, text: &str) -> Result<serde_json::Map<String, Value>, DomainError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad(field, "must be a JSON object")),
        Err(e) => Err(bad(field, format!("must be a JSON object: {e}"))),
    }
}

/// Parses a subscription's `DeliveryPolicy`.
pub fn parse_subscription(field: &str, text: &str) -> Result<DeliveryPolicy, DomainError> {
    let o = json_object(field, text)?;
    let mut p = DeliveryPolicy::default();
    for (k, x) in &o {
        match k.as_str() {
            "healthyRetryPolicy" => p.retry = Some(retry(&format!("{field}.{k}"), x)?),
            "requestPolicy" => p.content_type = content_type(&format!("{field}.{k}"), x)?,
            "throttlePolicy" | "sicklyRetryPolicy" => {}
            other => return Err(bad(field, format!("unknown section {other:?}"))),
        }
    }
    Ok(p)
}

/// Parses a topic's `DeliveryPolicy` (its `http` section applies to HTTP and
/// HTTPS subscriptions).
pub fn parse_topic(field: &str, text: &str) -> Result<DeliveryPolicy, DomainError> {
    let o = json_object(field, text)?;
    let mut p = DeliveryPolicy::default();
    if let Some(http) = o.get("http") {
        let f = format!("{field}.http");
        let h = http
            .as_object()
            .ok_or_else(|| bad(&f, "must be a JSON object"))?;
        for (k, x) in h {
            match k.as_str() {
                "defaultHealthyRetryPolicy" => p.retry = Some(retry(&format!("{f}.{k}"), x)?),
                "defaultRequestPolicy" => p.content_type = content_type(&format!("{f}.{k}"), x)?,
                "disableSubscriptionOverrides" => {
                    p.disable_overrides = x
                        .as_bool()
                        .ok_or_else(|| bad(&format!("{f}.{k}"), "must be true or false"))?
                }
                "defaultThrottlePolicy" | "defaultSicklyRetryPolicy" => {}
                other => return Err(bad(&f, format!("unknown setting {other:?}"))),
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_retries_three_times_twenty_seconds_apart() {
        let p = RetryPolicy::default();
        assert_eq!(
            (1..=4).map(|r| p.delay_ms(r)).collect::<Vec<_>>(),
            [Some(20_000), Some(20_000), Some(20_000), None]
        );
    }

    #[test]
    fn phases_follow_in_order() {
        let p = parse_subscription(
            "DeliveryPolicy",
            r#"{"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 9,
                "numRetries": 8, "numNoDelayRetries": 2, "numMinDelayRetries": 1,
                "numMaxDelayRetries": 1, "backoffFunction": "linear"}}"#,
        )
        .unwrap()
        .retry
        .unwrap();
        let d: Vec<_> = (1..=9).map(|r| p.delay_ms(r)).collect();
        assert_eq!(
            d,
            [
                Some(0),
                Some(0),
                Some(1000),
                Some(3000),
                Some(5000),
                Some(7000),
                Some(9000),
                Some(9000),
                None
            ]
        );
    }

    #[test]
    fn every_backoff_stays_within_bounds_and_grows() {
        for f in ["linear", "arithmetic", "geometric", "exponential"] {
            let text = format!(
                r#"{{"healthyRetryPolicy": {{"minDelayTarget": 2, "maxDelayTarget": 100, "numRetries": 10, "backoffFunction": "{f}"}}}}"#
            );
            let p = parse_subscription("p", &text).unwrap().retry.unwrap();
            let d: Vec<u64> = (1..=10).map(|r| p.delay_ms(r).unwrap()).collect();
            assert!(d.windows(2).all(|w| w[0] <= w[1]), "{f}: {d:?}");
            assert!(d[0] >= 2000 && d[9] == 100_000, "{f}: {d:?}");
        }
    }

    #[test]
    fn bad_policies_name_the_setting() {
        for (text, field) in [
            (
                r#"{"healthyRetryPolicy": {"numRetries": 101}}"#,
                "numRetries",
            ),
            (
                r#"{"healthyRetryPolicy": {"minDelayTarget": 0}}"#,
                "minDelayTarget",
            ),
            (
                r#"{"healthyRetryPolicy": {"backoffFunction": "cubic"}}"#,
                "backoffFunction",
            ),
            (
                r#"{"healthyRetryPolicy": {"numRetries": 1, "numNoDelayRetries": 2}}"#,
                "numNoDelayRetries",
            ),
            (r#"{"nope": {}}"#, "nope"),
            (r#"[1]"#, "JSON object"),
        ] {
            let e = parse_subscription("DeliveryPolicy", text).unwrap_err();
            assert!(e.message.contains(field), "{text}: {}", e.message);
        }
    }

    #[test]
    fn the_logarithm_and_exponential_are_accurate() {
        for x in [1.0, 1.5, 2.0, 20.0, 3600.0] {
            assert!((ln(x) - x.ln()).abs() < 1e-12, "ln {x}");
        }
        for y in [0.0, 0.5, 3.0, 8.19] {
            assert!((exp(y) / y.exp() - 1.0).abs() < 1e-9, "exp {y}");
        }
    }

    #[test]
    fn a_topic_can_forbid_overrides() {
        let topic = parse_topic(
            "DeliveryPolicy",
            r#"{"http": {"defaultHealthyRetryPolicy": {"numRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 1}, "disableSubscriptionOverrides": true}}"#,
        )
        .unwrap();
        let sub = parse_subscription("p", r#"{"healthyRetryPolicy": {"numRetries": 7}}"#).unwrap();
        let eff = DeliveryPolicy::effective(Some(&topic), Some(&sub));
        assert_eq!(eff.retry.unwrap().num_retries, 1);
        let open = DeliveryPolicy {
            disable_overrides: false,
            ..topic
        };
        let eff = DeliveryPolicy::effective(Some(&open), Some(&sub));
        assert_eq!(eff.retry.unwrap().num_retries, 7);
    }
}
