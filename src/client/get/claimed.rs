//! The paths a `-r` run has written or is writing (each file's final
//! name, `.part` and `.part.etag`), so that a name that would use one
//! again is skipped. Kept as keyed 64-bit hashes, not paths: a hostile
//! tar stream can name 100 000 files of 4096-byte paths in minutes, and
//! three such paths a file held ~1.2 GB (attack4). The key is random per
//! run, so a server cannot aim a collision; a chance one only skips a
//! member (the safe direction), never writes one twice.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;

/// The run's claimed paths: 8 bytes each (and the set's overhead).
#[derive(Debug, Default)]
pub(super) struct Claimed {
    key: RandomState,
    hashes: HashSet<u64>,
}

impl Claimed {
    /// True when `path` was claimed (or, by a chance of about one in 2^64
    /// a pair, collides with one that was).
    pub(super) fn contains(&self, path: &Path) -> bool {
        self.hashes.contains(&self.key.hash_one(path))
    }

    /// Claims `path`.
    pub(super) fn insert(&mut self, path: &Path) {
        self.hashes.insert(self.key.hash_one(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_path_is_found_and_another_is_not() {
        let mut claimed = Claimed::default();
        claimed.insert(Path::new("out/a"));
        assert!(claimed.contains(Path::new("out/a")));
        assert!(claimed.contains(Path::new("out//a")));
        assert!(!claimed.contains(Path::new("out/a.part")));
        assert!(!claimed.contains(Path::new("out/A")));
    }
}
