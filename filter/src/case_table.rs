//! What the two case tables share: running every case, judging its outcome
//! against what the documentation expects, and reporting every difference
//! at once.

use super::PolicyError;

/// One case run: its name, its outcome (`Ok(matched)` or the parse error),
/// what is expected ("match", "no-match" or "invalid") and a word an
/// invalid case's error must name.
pub(crate) struct Run<'a> {
    pub(crate) name: &'a str,
    pub(crate) outcome: Result<bool, PolicyError>,
    pub(crate) expect: &'a str,
    pub(crate) error_contains: Option<&'a str>,
}

/// Runs every case (at least `min` of them) and fails with each difference.
pub(crate) fn check_all<C>(cases: &[C], min: usize, run: impl Fn(&C) -> Run<'_>) {
    assert!(cases.len() >= min, "only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| judge(run(c))).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn judge(r: Run<'_>) -> Option<String> {
    let (name, expect) = (r.name, r.expect);
    let got = match r.outcome {
        Err(e) if expect != "invalid" => {
            return Some(format!("{name}: rejected ({e}), expected {expect}"))
        }
        Err(e) => {
            let word = r.error_contains?;
            let named = e.0.to_lowercase().contains(&word.to_lowercase());
            return (!named).then(|| format!("{name}: error {e:?} does not name {word:?}"));
        }
        Ok(true) => "match",
        Ok(false) => "no-match",
    };
    (got != expect).then(|| format!("{name}: got {got}, expected {expect}"))
}
