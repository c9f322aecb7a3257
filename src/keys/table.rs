//! The table of live keys: by the SHA-256 of the key's text (what a request presents) and by
//! id (admin, billing). The maps sit behind an `ArcSwap`: the request path reads them with no
//! lock, and the rare changes (a key minted, a key's text replaced) copy them.
//!
//! A key's state is one `Arc<KeyState>` for its whole life. Replacing a key's text only moves
//! which hash leads to it: requests in flight keep settling on the same balance, and the old
//! text stops leading anywhere the moment the new maps are published.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::live::KeyState;

#[derive(Default)]
struct Maps {
    by_hash: HashMap<[u8; 32], Arc<KeyState>>,
    by_id: HashMap<String, Arc<KeyState>>,
    /// The hash that leads to each key now (so a rotation knows which entry to drop).
    hash_of: HashMap<String, [u8; 32]>,
}

/// Every key, by hash (the request path) and by id (admin and billing).
#[derive(Default)]
pub struct KeyTable {
    maps: ArcSwap<Maps>,
}

impl KeyTable {
    /// A table holding `keys`, each with the hash of its text.
    pub fn new(keys: impl IntoIterator<Item = ([u8; 32], KeyState)>) -> KeyTable {
        let mut maps = Maps::default();
        for (hash, k) in keys {
            let k = Arc::new(k);
            maps.by_hash.insert(hash, k.clone());
            maps.hash_of.insert(k.id.clone(), hash);
            maps.by_id.insert(k.id.clone(), k);
        }
        KeyTable {
            maps: ArcSwap::from_pointee(maps),
        }
    }

    /// Look a key up by the SHA-256 of its full text.
    pub fn by_hash(&self, hash: &[u8; 32]) -> Option<Arc<KeyState>> {
        self.maps.load().by_hash.get(hash).cloned()
    }

    /// Look a key up by id.
    pub fn by_id(&self, id: &str) -> Option<Arc<KeyState>> {
        self.maps.load().by_id.get(id).cloned()
    }

    /// The hash of key `id`'s text now (a rotation replaces it).
    pub fn hash_of(&self, id: &str) -> Option<[u8; 32]> {
        self.maps.load().hash_of.get(id).copied()
    }

    /// Add a key whose text hashes to `hash` (copy on write: keys are minted rarely, read on
    /// every request).
    pub fn insert(&self, hash: [u8; 32], key: Arc<KeyState>) {
        self.maps.rcu(|old| {
            let mut by_hash = old.by_hash.clone();
            let mut by_id = old.by_id.clone();
            let mut hash_of = old.hash_of.clone();
            if let Some(previous) = hash_of.insert(key.id.clone(), hash) {
                by_hash.remove(&previous);
            }
            by_hash.insert(hash, key.clone());
            by_id.insert(key.id.clone(), key.clone());
            Maps {
                by_hash,
                by_id,
                hash_of,
            }
        });
    }

    /// Make `new_hash` the only hash leading to key `id` (its text was replaced): the old text
    /// is unknown from now on, the key's state is the same object. False when `id` is unknown.
    pub fn rekey(&self, id: &str, new_hash: [u8; 32]) -> bool {
        let Some(key) = self.by_id(id) else {
            return false;
        };
        self.insert(new_hash, key);
        true
    }

    /// Every key, oldest first.
    pub fn all(&self) -> Vec<Arc<KeyState>> {
        let mut v: Vec<_> = self.maps.load().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.maps.load().by_id.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
