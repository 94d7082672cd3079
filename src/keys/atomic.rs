//! Durable, atomic replacement of key files, and the keyring lock.
//!
//! A key file is either its old bytes or its new bytes, never a mix, even
//! across a crash or power loss: the new bytes go to a temp file in the same
//! directory (so the rename cannot cross file systems), are fsynced, renamed
//! over the target, and then the directory is fsynced so the rename itself
//! is durable.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::KeyError;

/// A fully written and fsynced temp file, not yet renamed into place.
/// Dropping it without [`Staged::commit`] deletes it, so an error between
/// staging and committing leaves the directory as it was.
pub(crate) struct Staged {
    tmp: NamedTempFile,
    target: PathBuf,
}

/// Writes `bytes` to a 0600 temp file next to `target` and fsyncs it.
pub(crate) fn stage(target: &Path, bytes: &[u8]) -> Result<Staged, KeyError> {
    let dir = parent(target);
    let mut tmp = tempfile::Builder::new()
        .prefix(".writ-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| KeyError::io(dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| KeyError::io(target, e))?;
    Ok(Staged {
        tmp,
        target: target.to_path_buf(),
    })
}

impl Staged {
    /// Renames the temp file over the target. The caller fsyncs the
    /// directory (once, after a batch of commits).
    pub(crate) fn commit(self) -> Result<(), KeyError> {
        let Staged { tmp, target } = self;
        tmp.persist(&target)
            .map(drop)
            .map_err(|e| KeyError::io(&target, e.error))
    }
}

/// Replaces `target` atomically and durably.
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    stage(target, bytes)?.commit()?;
    sync_dir(parent(target))
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io(dir, e))
}

/// Creates `dir` (and missing parents) as 0700: it holds private keys.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyError::io(dir, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock on the keyring directory, held while a command
/// changes it, so two concurrent `rotate`/`passwd` runs cannot interleave
/// their writes. Locking the directory itself leaves no lock file behind.
pub(crate) struct DirLock {
    _dir: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, KeyError> {
        let file = File::open(dir).map_err(|e| KeyError::io(dir, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _dir: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(KeyError::Busy {
                dir: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(KeyError::io(dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_atomic_replaces_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        drop(stage(&p, b"x").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(KeyError::Busy { .. })
        ));
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }
}
