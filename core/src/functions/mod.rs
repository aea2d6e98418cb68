//! Functions: the registry of Lambda-style functions.
//!
//! Pure domain logic like the other resources. A function's code (a zip
//! package) is stored once per content hash and shared by the functions
//! that use it; the record holds the settings and the hash. Running the
//! code is the workers' business (`sluice-worker`).
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `function/{name}` | [`StoredFunction`] |
//! | `fversion/{name}/{number}` | [`Version`]: an immutable snapshot |
//! | `falias/{name}/{alias}` | [`Alias`] |
//! | `fevcfg/{name}` | [`events::EventConfig`] |
//! | `fevent/{name}/{seq}` | [`events::Event`]: an asynchronous invocation |
//! | `fedue/{name}/{due ms}/{seq}` | due index of the events |
//! | `fcode/{sha256 hex}` | the zip package, raw bytes |

use std::collections::BTreeMap;

pub mod concurrency;
pub mod events;
pub mod invariants;
pub mod operations;
#[cfg(test)]
mod scenarios;

pub use operations::*;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::{self, Key};
use crate::store::{codec, StateRead, Txn};

pub use crate::limits::functions::{CODE_BYTES_MAX, NAME_MAX};
/// Memory range, MB.
pub const MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=10_240;
/// Timeout range, seconds.
pub const TIMEOUT_S: std::ops::RangeInclusive<u32> = 1..=900;
/// Most bytes of environment variables (names and values).
pub const ENVIRONMENT_MAX: usize = 4096;
/// Most published versions of one function.
pub const VERSIONS_MAX: u64 = 1000;
/// Most aliases of one function.
pub const ALIASES_MAX: usize = 100;
/// Routing weights are in basis points: 10 000 is all invocations.
pub const WEIGHT_ONE: u32 = 10_000;

/// Checks a function name: 1-64 of `[A-Za-z0-9_-]`.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    if !crate::names::is_valid(name, NAME_MAX, "-_") {
        return Err(DomainError::invalid(
            field,
            format!("must be 1-{NAME_MAX} characters of A-Z, a-z, 0-9, '-' and '_', got {name:?}"),
        ));
    }
    Ok(())
}

/// The settings of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Informational runtime name.
    pub runtime: String,
    /// `_HANDLER`.
    pub handler: String,
    /// MB.
    pub memory_mb: u32,
    /// Seconds.
    pub timeout_s: u32,
    /// Environment variables.
    pub environment: BTreeMap<String, String>,
    /// Description.
    pub description: String,
}

impl Settings {
    /// Checks the settings against the limits.
    pub fn validate(&self) -> Result<(), DomainError> {
        if !MEMORY_MB.contains(&self.memory_mb) {
            return Err(DomainError::invalid(
                "memory_size",
                format!("must be from 128 to 10240 MB, got {}", self.memory_mb),
            ));
        }
        if !TIMEOUT_S.contains(&self.timeout_s) {
            return Err(DomainError::invalid(
                "timeout",
                format!("must be from 1 to 900 seconds, got {}", self.timeout_s),
            ));
        }
        if self.handler.len() > 128 || self.handler.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "handler",
                "must be at most 128 characters without control characters",
            ));
        }
        if self.runtime.len() > 64 || self.runtime.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "runtime",
                "must be at most 64 characters without control characters",
            ));
        }
        if self.description.chars().count() > 256 {
            return Err(DomainError::invalid(
                "description",
                "must be at most 256 characters",
            ));
        }
        let mut size = 0;
        for (k, v) in &self.environment {
            let ok_name = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok_name || k.starts_with("AWS_") || k.starts_with("LAMBDA_") {
                return Err(DomainError::invalid(
                    "environment",
                    format!("{k:?} is not a variable name a function may set (letters, digits and '_', starting with a letter, not AWS_ or LAMBDA_)"),
                ));
            }
            if v.contains('\0') {
                return Err(DomainError::invalid(
                    format!("environment.{k}"),
                    "a value may not contain a NUL character",
                ));
            }
            size += k.len() + v.len();
        }
        if size > ENVIRONMENT_MAX {
            return Err(DomainError::invalid(
                "environment",
                format!("at most {ENVIRONMENT_MAX} bytes of variables, got {size}"),
            ));
        }
        Ok(())
    }
}

/// A function's code package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// Hex SHA-256 of `zip`.
    pub sha256: String,
    /// The zip package.
    #[serde(with = "serde_bytes")]
    pub zip: Vec<u8>,
}

/// A function as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    /// Name.
    pub name: String,
    /// Settings of `$LATEST`.
    pub settings: Settings,
    /// Hex SHA-256 of the package.
    pub code_sha256: String,
    /// Package size, bytes.
    pub code_size: u64,
    /// Bumped by every update; environments are shared only within one.
    pub revision: u64,
    /// State-machine time of the last change.
    pub modified_ms: u64,
    /// The highest published version, 0 before the first.
    pub last_version: u64,
    /// Asynchronous invocations accepted so far.
    pub event_seq: u64,
    /// Asynchronous invocations not yet settled.
    pub pending_events: u64,
}

/// A published version: what `$LATEST` was when it was published. Never
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its number, from 1.
    pub number: u64,
    /// Settings.
    pub settings: Settings,
    /// Hex SHA-256 of the package.
    pub code_sha256: String,
    /// Package size.
    pub code_size: u64,
    /// The `$LATEST` revision it was published from.
    pub from_revision: u64,
    /// State-machine time of publication.
    pub created_ms: u64,
}

/// An alias: a name for a version, optionally sharing invocations with a
/// second version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// Alias name.
    pub name: String,
    /// The version it names.
    pub version: u64,
    /// A second version and its share in basis points.
    pub additional: Option<(u64, u32)>,
    /// Description.
    pub description: String,
    /// Bumped by every update.
    pub revision: u64,
}

/// An alias to create or update, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasSpec {
    /// Alias name.
    pub name: String,
    /// The version it names.
    pub version: u64,
    /// A second version and its share in basis points.
    pub additional: Option<(u64, u32)>,
    /// Description.
    pub description: String,
}

impl AliasSpec {
    /// Validates an alias request at the edge.
    pub fn new(
        name: &str,
        version: &str,
        description: &str,
        weights: &BTreeMap<String, f64>,
    ) -> Result<AliasSpec, DomainError> {
        if !crate::names::is_valid(name, 128, "-_") || name.chars().all(|c| c.is_ascii_digit()) {
            return Err(DomainError::invalid(
                "name",
                "an alias is 1-128 characters of A-Z, a-z, 0-9, '-' and '_', not only digits",
            ));
        }
        let number = |field: &str, v: &str| -> Result<u64, DomainError> {
            v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                DomainError::invalid(
                    field,
                    format!("must be a published version number, got {v:?}"),
                )
            })
        };
        let version = number("function_version", version)?;
        let additional = match weights.len() {
            0 => None,
            1 => {
                let (v, w) = weights.iter().next().expect("one entry");
                let n = number("additional_version_weights", v)?;
                if !(0.0..=1.0).contains(w) || n == version {
                    return Err(DomainError::invalid(
                        "additional_version_weights",
                        "a second version (not the alias's own) with a weight from 0.0 to 1.0",
                    ));
                }
                Some((n, (w * f64::from(WEIGHT_ONE)).round() as u32))
            }
            _ => {
                return Err(DomainError::invalid(
                    "additional_version_weights",
                    "at most one additional version",
                ))
            }
        };
        if description.chars().count() > 256 {
            return Err(DomainError::invalid(
                "description",
                "at most 256 characters",
            ));
        }
        Ok(AliasSpec {
            name: name.to_string(),
            version,
            additional,
            description: description.to_string(),
        })
    }
}

/// Versioned envelope of [`Function`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredFunction {
    /// Version 1.
    V1(Function),
}

/// The `CreateFunction` command, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFunction {
    /// Name.
    pub name: String,
    /// Settings.
    pub settings: Settings,
    /// Code.
    pub code: Code,
}

/// A change of settings (UpdateFunctionConfiguration): `None` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// Handler.
    pub handler: Option<String>,
    /// Memory, MB.
    pub memory_mb: Option<u32>,
    /// Timeout, seconds.
    pub timeout_s: Option<u32>,
    /// New variables (all of them).
    pub environment: Option<BTreeMap<String, String>>,
    /// Description.
    pub description: Option<String>,
    /// Runtime.
    pub runtime: Option<String>,
}

fn function_key(name: &str) -> Vec<u8> {
    Key::new("function").str(name).build()
}

fn version_key(name: &str, n: u64) -> Vec<u8> {
    Key::new("fversion").str(name).u64(n).build()
}

fn alias_key(name: &str, alias: &str) -> Vec<u8> {
    Key::new("falias").str(name).str(alias).build()
}

fn code_key(sha256: &str) -> Vec<u8> {
    Key::new("fcode").str(sha256).build()
}

/// Prefix of function `name`'s keys in key space `space` (`fversion`,
/// `falias`, ...).
pub(crate) fn prefix_in(space: &str, name: &str) -> Vec<u8> {
    Key::new(space).str(name).build()
}

/// Every record of function `name` in key space `space`, in key order.
pub(crate) fn records_in<T: serde::de::DeserializeOwned>(
    state: &dyn StateRead,
    space: &str,
    name: &str,
) -> ApplyResult<Vec<T>> {
    Ok(crate::store::records_under(state, &prefix_in(space, name))?)
}

/// Reads a function.
pub fn load(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Function>> {
    Ok(crate::store::record_at(state, &function_key(name))?.map(|StoredFunction::V1(f)| f))
}

/// Reads a function or fails with `ResourceNotFoundException`.
pub fn require(state: &dyn StateRead, name: &str) -> ApplyResult<Function> {
    load(state, name)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!("function {name:?} does not exist"),
        )
        .into()
    })
}

fn save(txn: &mut Txn<'_>, f: &Function) {
    txn.put_record(function_key(&f.name), &StoredFunction::V1(f.clone()));
}

/// The zip package with hash `sha256`, if stored.
pub fn code(state: &dyn StateRead, sha256: &str) -> ApplyResult<Option<Vec<u8>>> {
    Ok(state.get(&code_key(sha256))?)
}

fn store_code(txn: &mut Txn<'_>, code: &Code) -> ApplyResult<()> {
    let key = code_key(&code.sha256);
    if txn.get(&key)?.is_none() {
        txn.put(key, code.zip.clone());
    }
    Ok(())
}

/// Deletes the package `sha256` when no function other than `except` uses
/// it.
fn release_code(txn: &mut Txn<'_>, sha256: &str, except: &str) -> ApplyResult<()> {
    let prefix = Key::new("function").build();
    for kv in txn.scan_prefix(&prefix) {
        let (k, v) = kv?;
        let StoredFunction::V1(f) = codec::decode(&k, &v)?;
        if f.name != except && f.code_sha256 == sha256 {
            return Ok(());
        }
    }
    let prefix = Key::new("fversion").build();
    for kv in txn.scan_prefix(&prefix) {
        let (k, v) = kv?;
        let version: Version = codec::decode(&k, &v)?;
        if version.code_sha256 == sha256
            && !k.starts_with(&Key::new("fversion").str(except).build())
        {
            return Ok(());
        }
    }
    txn.delete(code_key(sha256));
    Ok(())
}

/// Applies `CreateFunction`.
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, c: &CreateFunction) -> ApplyResult<Function> {
    if load(txn, &c.name)?.is_some() {
        return Err(DomainError::already_exists(
            "ResourceConflictException",
            format!("function {:?} already exists", c.name),
        )
        .into());
    }
    store_code(txn, &c.code)?;
    let f = Function {
        name: c.name.clone(),
        settings: c.settings.clone(),
        code_sha256: c.code.sha256.clone(),
        code_size: c.code.zip.len() as u64,
        revision: 1,
        modified_ms: ctx.now_ms,
        last_version: 0,
        event_seq: 0,
        pending_events: 0,
    };
    save(txn, &f);
    Ok(f)
}

/// Applies `UpdateFunctionCode`.
pub fn update_code(txn: &mut Txn<'_>, ctx: &Ctx, name: &str, code: &Code) -> ApplyResult<Function> {
    let mut f = require(txn, name)?;
    let old = f.code_sha256.clone();
    store_code(txn, code)?;
    f.code_sha256 = code.sha256.clone();
    f.code_size = code.zip.len() as u64;
    f.revision += 1;
    f.modified_ms = ctx.now_ms;
    save(txn, &f);
    if old != f.code_sha256 && !version_uses(txn, name, &old)? {
        release_code(txn, &old, name)?;
    }
    Ok(f)
}

/// Applies `UpdateFunctionConfiguration`.
pub fn update_settings(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    change: &SettingsChange,
) -> ApplyResult<Function> {
    let mut f = require(txn, name)?;
    let s = &mut f.settings;
    if let Some(v) = &change.handler {
        s.handler = v.clone();
    }
    if let Some(v) = change.memory_mb {
        s.memory_mb = v;
    }
    if let Some(v) = change.timeout_s {
        s.timeout_s = v;
    }
    if let Some(v) = &change.environment {
        s.environment = v.clone();
    }
    if let Some(v) = &change.description {
        s.description = v.clone();
    }
    if let Some(v) = &change.runtime {
        s.runtime = v.clone();
    }
    f.settings.validate()?;
    f.revision += 1;
    f.modified_ms = ctx.now_ms;
    save(txn, &f);
    Ok(f)
}

/// Whether a published version of `name` uses package `sha256`.
fn version_uses(state: &dyn StateRead, name: &str, sha256: &str) -> ApplyResult<bool> {
    for v in versions(state, name)? {
        if v.code_sha256 == sha256 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies `DeleteFunction`: the function, its versions and aliases, and
/// the packages no one else uses.
pub fn delete(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let f = require(txn, name)?;
    let mut hashes = std::collections::BTreeSet::from([f.code_sha256.clone()]);
    hashes.extend(versions(txn, name)?.into_iter().map(|v| v.code_sha256));
    txn.delete(function_key(name));
    let prefixes = [
        "fversion",
        "falias",
        "fevcfg",
        "fevent",
        "fedue",
        concurrency::SPACES[0],
        concurrency::SPACES[1],
    ]
    .map(|space| prefix_in(space, name));
    // Bounded by the caps on versions, aliases, waiting events and
    // provisioned configurations.
    txn.delete_prefixes(
        &prefixes,
        VERSIONS_MAX as usize
            + ALIASES_MAX
            + 2 * events::EVENTS_MAX as usize
            + concurrency::CONFIGS_MAX
            + 2,
    )?;
    for h in hashes {
        release_code(txn, &h, name)?;
    }
    Ok(())
}

/// The published versions of a function, in order.
pub fn versions(state: &dyn StateRead, name: &str) -> ApplyResult<Vec<Version>> {
    records_in(state, "fversion", name)
}

/// One published version.
pub fn version(state: &dyn StateRead, name: &str, n: u64) -> ApplyResult<Version> {
    let key = version_key(name, n);
    match state.get(&key)? {
        Some(b) => Ok(codec::decode(&key, &b)?),
        None => Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("function {name:?} has no version {n}"),
        )
        .into()),
    }
}

/// Applies `PublishVersion`: snapshots `$LATEST` as the next version, or
/// returns the last version when `$LATEST` has not changed since.
pub fn publish_version(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    expected_sha256: Option<&str>,
) -> ApplyResult<Version> {
    let mut f = require(txn, name)?;
    if let Some(want) = expected_sha256 {
        if want != f.code_sha256 {
            return Err(DomainError::precondition(
                "PreconditionFailedException",
                format!(
                    "$LATEST's code is not the expected one (it is {})",
                    f.code_sha256
                ),
            )
            .into());
        }
    }
    if f.last_version > 0 {
        let last = version(txn, name, f.last_version)?;
        if last.from_revision == f.revision {
            return Ok(last);
        }
    }
    if f.last_version >= VERSIONS_MAX {
        return Err(DomainError::limit(
            "CodeStorageExceededException",
            format!("function {name:?} has {VERSIONS_MAX} versions, the most it may"),
        )
        .into());
    }
    f.last_version += 1;
    let v = Version {
        number: f.last_version,
        settings: f.settings.clone(),
        code_sha256: f.code_sha256.clone(),
        code_size: f.code_size,
        from_revision: f.revision,
        created_ms: ctx.now_ms,
    };
    txn.put_record(version_key(name, v.number), &v);
    save(txn, &f);
    Ok(v)
}

/// Reads an alias.
pub fn alias(state: &dyn StateRead, name: &str, alias: &str) -> ApplyResult<Option<Alias>> {
    Ok(crate::store::record_at(state, &alias_key(name, alias))?)
}

/// Every alias of a function, by name.
pub fn aliases(state: &dyn StateRead, name: &str) -> ApplyResult<Vec<Alias>> {
    records_in(state, "falias", name)
}

/// Applies `CreateAlias` (`create`) or `UpdateAlias`.
pub fn put_alias(
    txn: &mut Txn<'_>,
    name: &str,
    spec: &AliasSpec,
    create: bool,
) -> ApplyResult<Alias> {
    require(txn, name)?;
    version(txn, name, spec.version)?;
    if let Some((v, _)) = spec.additional {
        version(txn, name, v)?;
    }
    let existing = alias(txn, name, &spec.name)?;
    let revision = match (&existing, create) {
        (Some(_), true) => {
            return Err(DomainError::already_exists(
                "ResourceConflictException",
                format!("function {name:?} already has an alias {:?}", spec.name),
            )
            .into())
        }
        (None, false) => {
            return Err(DomainError::not_found(
                "ResourceNotFoundException",
                format!("function {name:?} has no alias {:?}", spec.name),
            )
            .into())
        }
        (Some(a), false) => a.revision + 1,
        (None, true) => {
            if aliases(txn, name)?.len() >= ALIASES_MAX {
                return Err(DomainError::limit(
                    "ResourceConflictException",
                    format!("function {name:?} has {ALIASES_MAX} aliases, the most it may"),
                )
                .into());
            }
            1
        }
    };
    let a = Alias {
        name: spec.name.clone(),
        version: spec.version,
        additional: spec.additional,
        description: spec.description.clone(),
        revision,
    };
    txn.put_record(alias_key(name, &a.name), &a);
    Ok(a)
}

/// What an invocation with a qualifier runs: `$LATEST` (no version), a
/// version, or an alias's version and, with its share, a second one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The function.
    pub function: Function,
    /// The version; `None` for `$LATEST`.
    pub version: Option<Version>,
    /// An alias's second version and its share in basis points.
    pub additional: Option<(Version, u32)>,
    /// The function's reserved concurrency, if set.
    pub reserved: Option<u32>,
}

/// Resolves `qualifier` (empty or `$LATEST`, a version number, an alias).
pub fn target(state: &dyn StateRead, name: &str, qualifier: &str) -> ApplyResult<Target> {
    let function = require(state, name)?;
    let reserved = concurrency::reserved(state, name)?;
    if qualifier.is_empty() || qualifier == "$LATEST" {
        return Ok(Target {
            function,
            version: None,
            additional: None,
            reserved,
        });
    }
    if let Ok(n) = qualifier.parse::<u64>() {
        return Ok(Target {
            version: Some(version(state, name, n)?),
            function,
            additional: None,
            reserved,
        });
    }
    let a = alias(state, name, qualifier)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!("function {name:?} has no version or alias {qualifier:?}"),
        )
    })?;
    let additional = match a.additional {
        Some((v, w)) => Some((version(state, name, v)?, w)),
        None => None,
    };
    Ok(Target {
        version: Some(version(state, name, a.version)?),
        function,
        additional,
        reserved,
    })
}

/// Applies `DeleteAlias`.
pub fn delete_alias(txn: &mut Txn<'_>, name: &str, alias_name: &str) -> ApplyResult<()> {
    require(txn, name)?;
    if alias(txn, name, alias_name)?.is_none() {
        return Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("function {name:?} has no alias {alias_name:?}"),
        )
        .into());
    }
    txn.delete(alias_key(name, alias_name));
    // Its provisioned concurrency goes with it (a new alias of the name
    // starts without).
    concurrency::forget(txn, name, alias_name);
    Ok(())
}

/// A page of functions after `after`, and whether more follow.
pub fn list(
    state: &dyn StateRead,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<Function>, bool)> {
    let (names, more) = keys::names_after(state, "function", after, limit)?;
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        if let Some(f) = load(state, &n)? {
            out.push(f);
        }
    }
    Ok((out, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemState;

    fn settings() -> Settings {
        Settings {
            runtime: "provided".into(),
            handler: "app.handler".into(),
            memory_mb: 128,
            timeout_s: 3,
            environment: BTreeMap::new(),
            description: String::new(),
        }
    }

    fn code(bytes: &[u8]) -> Code {
        use sha2::Digest;
        Code {
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            zip: bytes.to_vec(),
        }
    }

    fn ctx() -> Ctx {
        Ctx::at(1)
    }

    /// No change but what `edit` makes.
    fn change(edit: impl FnOnce(&mut SettingsChange)) -> SettingsChange {
        let mut c = SettingsChange::default();
        edit(&mut c);
        c
    }

    /// Creates function "f" with package `zip`.
    fn create_f(t: &mut Txn<'_>, zip: &[u8]) -> ApplyResult<Function> {
        create(
            t,
            &ctx(),
            &CreateFunction {
                name: "f".into(),
                settings: settings(),
                code: code(zip),
            },
        )
    }

    #[test]
    fn shared_code_is_stored_once_and_released_with_its_last_user() {
        let mut s = MemState::default();
        for name in ["a", "b"] {
            s.run(|t| {
                create(
                    t,
                    &ctx(),
                    &CreateFunction {
                        name: name.into(),
                        settings: settings(),
                        code: code(b"zip-1"),
                    },
                )
            })
            .unwrap();
        }
        let sha = code(b"zip-1").sha256;
        assert_eq!(super::code(&s, &sha).unwrap().unwrap(), b"zip-1");
        s.run(|t| update_code(t, &ctx(), "a", &code(b"zip-2")))
            .unwrap();
        assert!(super::code(&s, &sha).unwrap().is_some(), "b still uses it");
        assert_eq!(require(&s, "a").unwrap().revision, 2);
        s.run(|t| delete(t, "b")).unwrap();
        assert!(super::code(&s, &sha).unwrap().is_none());
        assert!(super::code(&s, &code(b"zip-2").sha256).unwrap().is_some());
    }

    #[test]
    fn provisioned_configurations_are_normalised_and_go_with_their_alias() {
        let mut s = MemState::default();
        s.run(|t| create_f(t, b"zip")).unwrap();
        s.run(|t| publish_version(t, &ctx(), "f", None)).unwrap();
        let alias = AliasSpec {
            name: "live".into(),
            version: 1,
            additional: None,
            description: String::new(),
        };
        s.run(|t| put_alias(t, "f", &alias, true)).unwrap();
        // "01" and "1" are one configuration.
        s.run(|t| concurrency::put_provisioned(t, "f", "01", Some(2)))
            .unwrap();
        s.run(|t| concurrency::put_provisioned(t, "f", "1", Some(3)))
            .unwrap();
        s.run(|t| concurrency::put_provisioned(t, "f", "live", Some(1)))
            .unwrap();
        let configs = concurrency::provisioned_of(&s, "f").unwrap();
        let got: Vec<(&str, u32)> = configs
            .iter()
            .map(|c| (c.qualifier.as_str(), c.requested))
            .collect();
        assert_eq!(got, [("1", 3), ("live", 1)]);
        // Refused: $LATEST, a missing version, too many.
        for (q, n) in [("$LATEST", 1), ("9", 1), ("1", 101), ("1", 0)] {
            let e = s
                .run(|t| concurrency::put_provisioned(t, "f", q, Some(n)))
                .unwrap_err();
            assert!(
                matches!(e, crate::error::ApplyError::Rejected(_)),
                "{q} {n}"
            );
        }
        // Deleting the alias deletes its configuration.
        s.run(|t| delete_alias(t, "f", "live")).unwrap();
        let left: Vec<String> = concurrency::provisioned_of(&s, "f")
            .unwrap()
            .into_iter()
            .map(|c| c.qualifier)
            .collect();
        assert_eq!(left, ["1"]);
        // And the function with everything.
        s.run(|t| delete(t, "f")).unwrap();
        assert!(concurrency::provisioned_all(&s).unwrap().is_empty());
    }

    #[test]
    fn versions_are_immutable_snapshots() {
        let mut s = MemState::default();
        s.run(|t| create_f(t, b"v1")).unwrap();
        let v1 = s.run(|t| publish_version(t, &ctx(), "f", None)).unwrap();
        assert_eq!(v1.number, 1);
        // Nothing changed: publishing again returns version 1.
        let again = s.run(|t| publish_version(t, &ctx(), "f", None)).unwrap();
        assert_eq!(again, v1);
        s.run(|t| update_code(t, &ctx(), "f", &code(b"v2")))
            .unwrap();
        s.run(|t| update_settings(t, &ctx(), "f", &change(|c| c.memory_mb = Some(512))))
            .unwrap();
        // $LATEST changed; version 1 did not, and its code is kept.
        let kept = version(&s, "f", 1).unwrap();
        assert_eq!(kept.code_sha256, code(b"v1").sha256);
        assert_eq!(kept.settings.memory_mb, 128);
        assert!(super::code(&s, &code(b"v1").sha256).unwrap().is_some());
        let v2 = s.run(|t| publish_version(t, &ctx(), "f", None)).unwrap();
        assert_eq!((v2.number, v2.settings.memory_mb), (2, 512));
        let spec = AliasSpec::new("live", "1", "", &BTreeMap::from([("2".into(), 0.1)])).unwrap();
        assert_eq!(spec.additional, Some((2, 1000)));
        s.run(|t| put_alias(t, "f", &spec, true)).unwrap();
        let bad = AliasSpec::new("old", "9", "", &BTreeMap::new()).unwrap();
        assert!(s.run(|t| put_alias(t, "f", &bad, true)).is_err());
        s.run(|t| delete(t, "f")).unwrap();
        for space in ["fversion/", "falias/", "fcode/", "function/"] {
            assert!(
                s.first_with_prefix(space.as_bytes()).unwrap().is_none(),
                "{space}"
            );
        }
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (change, field) in [
            (change(|c| c.memory_mb = Some(64)), "memory_size"),
            (change(|c| c.timeout_s = Some(901)), "timeout"),
            (
                change(|c| c.environment = Some(BTreeMap::from([("AWS_X".into(), "1".into())]))),
                "environment",
            ),
        ] {
            let mut s = MemState::default();
            s.run(|t| {
                create(
                    t,
                    &ctx(),
                    &CreateFunction {
                        name: "f".into(),
                        settings: settings(),
                        code: code(b"z"),
                    },
                )
            })
            .unwrap();
            match s.run(|t| update_settings(t, &ctx(), "f", &change)) {
                Err(crate::error::ApplyError::Rejected(e)) => {
                    assert_eq!(e.field.as_deref(), Some(field))
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(require(&s, "f").unwrap().revision, 1, "nothing changed");
        }
    }
}
