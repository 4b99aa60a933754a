//! Things a test owns and must not leave behind, also when it fails: a
//! directory removed and a process killed when dropped.

use std::path::PathBuf;
use std::process::Child;

/// A directory removed (with what is in it) when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
