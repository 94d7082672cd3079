//! Small file-tree helpers: copying a tree, snapshotting one to compare
//! before and after, a file's permission bits.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every file and directory of a tree: content, mtime (files only) and mode.
pub type Snapshot = BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>, u32)>;

/// A [`Snapshot`] of the tree at `root`; empty when there is none.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    if root.exists() {
        walk(root, &mut map);
    }
    map
}

fn walk(path: &Path, map: &mut Snapshot) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode();
    if meta.is_dir() {
        // A directory's mtime moves when temp files come and go; its
        // entries are compared one by one instead.
        map.insert(path.to_path_buf(), (Vec::new(), None, mode));
        for entry in std::fs::read_dir(path).unwrap() {
            walk(&entry.unwrap().path(), map);
        }
    } else {
        let bytes = std::fs::read(path).unwrap();
        map.insert(path.to_path_buf(), (bytes, meta.modified().ok(), mode));
    }
}

/// Copies the tree at `from` to `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
