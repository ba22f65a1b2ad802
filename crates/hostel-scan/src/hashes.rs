//! Whole-file hash signatures indexed by size: a file whose size no signature names is never
//! hashed, and one that is gets only the digests its candidates need.

use crate::sigs::{HashKind, HashSig};
use md5::Digest as _;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct HashIndex {
    sigs: Vec<HashSig>,
    by_size: HashMap<u64, Vec<u32>>,
    any_size: Vec<u32>,
}

/// Which digests a file needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needed {
    pub md5: bool,
    pub sha1: bool,
    pub sha256: bool,
}

impl Needed {
    pub fn any(&self) -> bool {
        self.md5 || self.sha1 || self.sha256
    }
}

impl HashIndex {
    pub fn new(sigs: Vec<HashSig>) -> Self {
        let mut idx = HashIndex::default();
        for (i, s) in sigs.iter().enumerate() {
            match s.size {
                Some(n) => idx.by_size.entry(n).or_default().push(i as u32),
                None => idx.any_size.push(i as u32),
            }
        }
        idx.sigs = sigs;
        idx
    }

    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    fn candidates(&self, size: u64) -> impl Iterator<Item = &HashSig> {
        self.by_size
            .get(&size)
            .into_iter()
            .flatten()
            .chain(self.any_size.iter())
            .filter_map(|&i| self.sigs.get(i as usize))
    }

    pub fn needed(&self, size: u64) -> Needed {
        let mut n = Needed::default();
        for s in self.candidates(size) {
            match s.kind {
                HashKind::Md5 => n.md5 = true,
                HashKind::Sha1 => n.sha1 = true,
                HashKind::Sha256 => n.sha256 = true,
            }
        }
        n
    }

    /// The names of the signatures matching a file of `size` with these digests.
    pub fn matches(&self, size: u64, d: &Digests) -> Vec<&str> {
        self.candidates(size)
            .filter(|s| {
                let got = match s.kind {
                    HashKind::Md5 => d.md5.as_deref(),
                    HashKind::Sha1 => d.sha1.as_deref(),
                    HashKind::Sha256 => d.sha256.as_deref(),
                };
                got == Some(s.digest.as_slice())
            })
            .map(|s| s.name.as_str())
            .collect()
    }
}

#[derive(Debug, Default, Clone)]
pub struct Digests {
    pub md5: Option<Vec<u8>>,
    pub sha1: Option<Vec<u8>>,
    pub sha256: Option<Vec<u8>>,
}

/// Running digests of the kinds needed.
pub struct Hasher {
    md5: Option<md5::Md5>,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
}

impl Hasher {
    pub fn new(n: Needed) -> Self {
        Hasher {
            md5: n.md5.then(md5::Md5::new),
            sha1: n.sha1.then(sha1::Sha1::new),
            sha256: n.sha256.then(sha2::Sha256::new),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            md5: self.md5.map(|h| h.finalize().to_vec()),
            sha1: self.sha1.map(|h| h.finalize().to_vec()),
            sha256: self.sha256.map(|h| h.finalize().to_vec()),
        }
    }
}
