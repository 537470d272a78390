//! A seed corpus being written by the seed generators (`src/bin/seeds.rs`,
//! `src/bin/braid_seeds.rs`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Seeds of one target, deduplicated, written as `seed-NNNN`.
pub struct Corpus {
    dir: PathBuf,
    seeds: BTreeSet<Vec<u8>>,
    max_len: usize,
}

impl Corpus {
    pub fn new(root: &Path, target: &str, max_len: usize) -> Corpus {
        Corpus {
            dir: root.join(target),
            seeds: BTreeSet::new(),
            max_len,
        }
    }

    /// Keeps `seed` unless it is longer than the target's `-max_len`.
    pub fn add(&mut self, seed: Vec<u8>) {
        if seed.len() <= self.max_len {
            self.seeds.insert(seed);
        }
    }

    pub fn write(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        for (i, seed) in self.seeds.iter().enumerate() {
            fs::write(self.dir.join(format!("seed-{i:04}")), seed)?;
        }
        println!("{}: {} seeds", self.dir.display(), self.seeds.len());
        Ok(())
    }
}
