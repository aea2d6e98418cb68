//! STS over the AWS query protocol (a form post, an XML answer): only
//! `GetCallerIdentity`, which tools call first to learn who their keys are.

use super::error::AwsError;
use super::query;
use crate::auth::caller::Caller;
use crate::identity::Identity;

/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "sts";
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Answers `action` for `caller`: the XML body.
pub fn handle(
    identity: &Identity,
    caller: &Caller,
    action: &str,
    request_id: &str,
) -> Result<String, AwsError> {
    if action != "GetCallerIdentity" {
        return Err(query::invalid_action(action));
    }
    // In the development mode anyone is the account's root, as the
    // emulators answer.
    let arn = match caller {
        Caller::Anonymous => format!("arn:aws:iam::{}:root", identity.account_id),
        c => c.arn(identity),
    };
    let user_id = caller
        .access_key_id()
        .map(str::to_string)
        .unwrap_or_else(|| identity.account_id.clone());
    Ok(format!(
        "<GetCallerIdentityResponse xmlns=\"{XMLNS}\"><GetCallerIdentityResult>\
         <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
         </GetCallerIdentityResult><ResponseMetadata><RequestId>{request_id}</RequestId>\
         </ResponseMetadata></GetCallerIdentityResponse>",
        query::escape(&arn),
        query::escape(&user_id),
        query::escape(&identity.account_id),
    ))
}
