//! The data directory's format version, in `{data-dir}/FORMAT`.
//!
//! Formats change before 1.0 without migration, but a node never misreads
//! one it does not know: it refuses to start on a directory written in
//! another format, or on one with data and no `FORMAT` file (written before
//! formats were recorded), and says what it found and what to do.

use std::path::Path;

/// The format this build writes and reads.
/// 3: log segments open with a header and are created at their full size.
/// 4: one `Tag` command replaces the six tag commands (the command
/// encoding changed).
/// 5: each IAM change is a command of its own (`CreatePrincipal` ...
/// `DetachPolicy` replace the one `Iam` command), so `Tag` moved.
/// 6: the log's commands apply differently (a redriven message is a new
/// message, a record's size counts its partition key, a FIFO topic takes
/// standard queue subscriptions), so a format 5 log replayed by this
/// build would not give the state its nodes had.
/// 7: a log entry holds its proposal as one length-prefixed byte string,
/// encoded once by the proposing node (`raft::payload`), not as the
/// proposal's fields.
/// 8: a sent message's body stays in its log entry and the state holds a
/// reference to it (`raft::bodies`); snapshots keep the bodies the log may
/// drop.
/// 9: stream records live in files of their own (`store::records`), not in
/// the state tree.
/// 10: a body reference holds the body's length, and the log keeps whole
/// segments whose bodies are still live (`log/kept/`).
/// 11: a clean stop writes queue message keys to `queue-index/`, not into
/// the state tree, so a format 10 build would start from a clean state
/// missing every queued message; a queued message's id and MD5 are stored
/// as the bytes they spell (`queues::hex_text`).
/// 12: a rule's targets carry a retry policy (the encoding of PutTargets
/// and of stored rules changed).
/// 13: a record to put carries its hash key, worked out where the request
/// arrived, not its explicit hash key alone (the encoding of PutRecords
/// changed).
pub const CURRENT: u32 = 13;
const FILE: &str = "FORMAT";
const MAGIC: &str = "sluice-data-format";

/// Whether `dir` holds anything a node wrote (a log, a state, snapshots).
fn holds_data(dir: &Path) -> bool {
    ["log", "db", "records", "queue-index", "snapshots"]
        .iter()
        .any(|sub| {
            std::fs::read_dir(dir.join(sub))
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false)
        })
}

/// Checks the format of the data directory `dir`, recording the current
/// one in an empty directory.
pub fn check_or_record(dir: &Path) -> Result<(), String> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .trim()
                .strip_prefix(MAGIC)
                .and_then(|v| v.trim().parse::<u32>().ok());
            match found {
                Some(CURRENT) => Ok(()),
                Some(v) => Err(format!(
                    "{} holds data in format {v}; this Sluice reads format {CURRENT} only: run the version that wrote it, or start this one with an empty data directory (formats change without migration before 1.0)",
                    dir.display()
                )),
                None => Err(format!(
                    "{}: not a Sluice data format file (found {:?}); is this a Sluice data directory?",
                    path.display(),
                    text.chars().take(40).collect::<String>()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if holds_data(dir) {
                return Err(format!(
                    "{} holds data written by an earlier Sluice (format 1, before formats were recorded); this Sluice reads format {CURRENT} only: run the version that wrote it, or start this one with an empty data directory (formats change without migration before 1.0)",
                    dir.display()
                ));
            }
            let tmp = dir.join(format!("{FILE}.tmp"));
            std::fs::write(&tmp, format!("{MAGIC} {CURRENT}\n"))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_is_stamped_and_others_are_refused_with_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record(dir.path()).unwrap();
        check_or_record(dir.path()).unwrap();
        assert!(std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .contains(&CURRENT.to_string()));

        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(old.path().join("log")).unwrap();
        std::fs::write(old.path().join("log/segment-1"), b"x").unwrap();
        let e = check_or_record(old.path()).unwrap_err();
        assert!(e.contains("format 1"), "{e}");
        assert!(e.contains("empty data directory"), "{e}");

        // The format before this one (written by the previous release) is
        // refused with what was found and what to do.
        let previous = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(previous.path().join("log")).unwrap();
        std::fs::write(
            previous.path().join(FILE),
            format!("sluice-data-format {}\n", CURRENT - 1),
        )
        .unwrap();
        let e = check_or_record(previous.path()).unwrap_err();
        assert!(e.contains(&format!("format {}", CURRENT - 1)), "{e}");
        assert!(e.contains("run the version that wrote it"), "{e}");

        let newer = tempfile::tempdir().unwrap();
        let next = CURRENT + 1;
        std::fs::write(
            newer.path().join(FILE),
            format!("sluice-data-format {next}\n"),
        )
        .unwrap();
        assert!(check_or_record(newer.path())
            .unwrap_err()
            .contains(&format!("format {next}")));

        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join(FILE), "PostgreSQL 15\n").unwrap();
        assert!(check_or_record(foreign.path())
            .unwrap_err()
            .contains("not a Sluice data format file"));
    }
}
