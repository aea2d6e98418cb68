//! What a damaged Raft log looks like, as the storage layer reports it. The
//! log's files are the broker's; the description is plain data, so the
//! storage error every layer shares can carry it.

use std::path::PathBuf;

/// What is wrong where a log is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A record does not read back, yet valid ones follow it.
    Record,
    /// The entries between one segment's last record and the next
    /// segment's first are missing.
    Gap,
    /// The segment's header does not read back.
    Header,
    /// The file is shorter than it was created: its end was cut off.
    Truncated,
}

/// Damage in the log: something other than a torn final write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// What is wrong.
    pub kind: DamageKind,
    /// The segment file holding the damage.
    pub path: PathBuf,
    /// Byte offset of the first bad byte in that file (the end of the
    /// records that read back).
    pub offset: u64,
    /// Index of the first entry that cannot be read.
    pub first_lost: u64,
    /// The last index the log held, as far as can be told: `None` when the
    /// log's last segment is cut short or its header damaged, so that how
    /// far it went is unknown.
    pub last_seen: Option<u64>,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the Raft log is damaged in {} at byte offset {}: ",
            self.path.display(),
            self.offset
        )?;
        match self.kind {
            DamageKind::Record => write!(
                f,
                "entry {} does not read back, yet valid entries follow it (damage, not a torn final write)",
                self.first_lost
            )?,
            DamageKind::Gap => write!(
                f,
                "the segment ends before entry {}, which the next segment does not start with",
                self.first_lost
            )?,
            DamageKind::Header => write!(
                f,
                "the segment's header does not read back, so entries from {} on cannot be trusted",
                self.first_lost
            )?,
            DamageKind::Truncated => write!(
                f,
                "the file is shorter than it was created, so entries from {} on were cut off",
                self.first_lost
            )?,
        }
        match self.last_seen {
            Some(last) => write!(f, "; the log held entries up to {last}"),
            None => write!(f, "; how far the log went is unknown"),
        }
    }
}
