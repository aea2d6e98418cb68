//! A mapping's `LastProcessingResult`, as its pollers report it: only when
//! it changes, so a busy poller costs no extra write per batch.

use crate::ClusterLink;

/// `LastProcessingResult` after a batch that was processed.
pub const OK: &str = "OK";
/// After a batch the function failed.
pub const FUNCTION_FAILED: &str = "PROBLEM: Function call failed";
/// After a batch that could not be handed to the function.
pub const INVOKE_FAILED: &str = "PROBLEM: Function could not be invoked";

/// What one poller last reported.
#[derive(Debug, Default)]
pub struct Reporter {
    last: Option<&'static str>,
}

impl Reporter {
    /// Reports `result` for the mapping unless it is what was reported
    /// last; a report that fails is tried again with the next change or
    /// batch.
    pub async fn report(
        &mut self,
        link: &ClusterLink,
        function: &str,
        uuid: &str,
        result: &'static str,
    ) {
        if self.last == Some(result) {
            return;
        }
        match link.report_result(function, uuid, result).await {
            Ok(()) => self.last = Some(result),
            Err(e) => {
                tracing::debug!(mapping = %uuid, error = %e, "could not report the processing result")
            }
        }
    }
}
