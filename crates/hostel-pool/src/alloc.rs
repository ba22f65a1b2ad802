//! Free clusters of one device: a bitmap rebuilt from the metadata at open.

pub struct FreeMap {
    bits: Vec<u64>,
    clusters: u64,
    free: u64,
    hint: u64,
}

impl FreeMap {
    pub fn new(clusters: u64) -> FreeMap {
        let words = clusters.div_ceil(64) as usize;
        let mut bits = vec![u64::MAX; words];
        // Clusters past the end are never free.
        let tail = clusters % 64;
        if tail != 0 {
            if let Some(last) = bits.last_mut() {
                *last = (1u64 << tail) - 1;
            }
        }
        FreeMap {
            bits,
            clusters,
            free: clusters,
            hint: 0,
        }
    }

    pub fn free(&self) -> u64 {
        self.free
    }

    /// Marks `c` used; false if it was already used (or out of range).
    pub fn take(&mut self, c: u64) -> bool {
        if c >= self.clusters {
            return false;
        }
        let (w, b) = ((c / 64) as usize, c % 64);
        if self.bits[w] & (1 << b) == 0 {
            return false;
        }
        self.bits[w] &= !(1 << b);
        self.free -= 1;
        true
    }

    pub fn release(&mut self, c: u64) {
        if c >= self.clusters {
            return;
        }
        let (w, b) = ((c / 64) as usize, c % 64);
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.free += 1;
        }
    }

    /// Takes the first free cluster at or after the hint, wrapping once.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = self.bits.len();
        let start = (self.hint / 64) as usize;
        for i in 0..words {
            let w = (start + i) % words;
            if self.bits[w] != 0 {
                let c = w as u64 * 64 + u64::from(self.bits[w].trailing_zeros());
                self.take(c);
                self.hint = c + 1;
                return Some(c);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::FreeMap;

    #[test]
    fn allocates_every_cluster_once() {
        let mut f = FreeMap::new(130);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(c) = f.alloc() {
            assert!(seen.insert(c));
        }
        assert_eq!(seen.len(), 130);
        assert_eq!(f.free(), 0);
        f.release(5);
        assert_eq!(f.alloc(), Some(5));
        assert!(!f.take(130));
    }
}
