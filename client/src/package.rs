//! Function packages: a directory zipped the way Lambda expects.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Error;

/// Zips the files under `dir` (paths relative to it, modes kept, so an
/// executable `bootstrap` stays executable).
pub fn zip_directory(dir: &Path) -> Result<Vec<u8>, Error> {
    let fail = |what: String| Error::Config(what);
    let mut files = Vec::new();
    collect(dir, dir, &mut files).map_err(|e| fail(format!("reading {}: {e}", dir.display())))?;
    files.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for rel in files {
        let path = dir.join(&rel);
        let meta =
            std::fs::metadata(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(meta.permissions().mode() & 0o777);
        let name = rel.to_string_lossy().replace('\\', "/");
        zip.start_file(name, options)
            .map_err(|e| fail(format!("zipping {}: {e}", path.display())))?;
        let bytes =
            std::fs::read(&path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        zip.write_all(&bytes)
            .map_err(|e| fail(format!("zipping {}: {e}", path.display())))?;
    }
    let out = zip
        .finish()
        .map_err(|e| fail(format!("zipping {}: {e}", dir.display())))?;
    Ok(out.into_inner())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name() != "__pycache__" {
                collect(root, &path, out)?;
            }
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}
