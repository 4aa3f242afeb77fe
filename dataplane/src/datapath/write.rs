//! Every change the daemon makes to a BPF map goes through [`put`] and
//! [`erase`]: a value already in place is not written again (so a restart
//! that finds the datapath right rewrites nothing), and each change is
//! counted ([`count`]; attaching and detaching programs count too, through
//! [`counted`]).

use std::borrow::Borrow;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::Pod;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuHashMap};

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Changes made to BPF maps and program attachments since the start.
pub fn count() -> u64 {
    WRITES.load(Ordering::Relaxed)
}

/// Counts one change made outside the maps (a program attached, a link pin removed).
pub(crate) fn counted() {
    WRITES.fetch_add(1, Ordering::Relaxed);
}

/// A map seen as cells: read and write one key.
pub(crate) trait Cells {
    type K;
    type V: Pod;
    fn read(&self, key: &Self::K) -> Option<Self::V>;
    fn write(&mut self, key: &Self::K, value: &Self::V) -> Result<(), MapError>;
}

/// A map whose keys can go (an array's cannot).
pub(crate) trait Erasable {
    type K;
    fn delete(&mut self, key: &Self::K) -> Result<(), MapError>;
}

impl<K: Pod, V: Pod> Cells for HashMap<MapData, K, V> {
    type K = K;
    type V = V;
    fn read(&self, key: &K) -> Option<V> {
        self.get(key, 0).ok()
    }
    fn write(&mut self, key: &K, value: &V) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
}

impl<K: Pod, V: Pod> Erasable for HashMap<MapData, K, V> {
    type K = K;
    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

impl<K: Pod, V: Pod> Erasable for PerCpuHashMap<MapData, K, V> {
    type K = K;
    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

impl<K: Pod, V: Pod> Cells for LpmTrie<MapData, K, V> {
    type K = Key<K>;
    type V = V;
    fn read(&self, key: &Key<K>) -> Option<V> {
        self.get(key, 0).ok()
    }
    fn write(&mut self, key: &Key<K>, value: &V) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }
}

impl<K: Pod, V: Pod> Erasable for LpmTrie<MapData, K, V> {
    type K = Key<K>;
    fn delete(&mut self, key: &Key<K>) -> Result<(), MapError> {
        self.remove(key)
    }
}

impl<V: Pod> Cells for Array<MapData, V> {
    type K = u32;
    type V = V;
    fn read(&self, key: &u32) -> Option<V> {
        self.get(key, 0).ok()
    }
    fn write(&mut self, key: &u32, value: &V) -> Result<(), MapError> {
        self.set(*key, value, 0)
    }
}

fn bytes<V: Pod>(v: &V) -> &[u8] {
    // SAFETY: Pod types are plain data without pointers; every byte is readable.
    unsafe { std::slice::from_raw_parts((v as *const V).cast::<u8>(), size_of::<V>()) }
}

/// Writes `value` at `key` unless the map holds exactly it already.
pub(crate) fn put<M: Cells>(
    map: &mut M,
    key: impl Borrow<M::K>,
    value: impl Borrow<M::V>,
) -> Result<(), MapError> {
    let (key, value) = (key.borrow(), value.borrow());
    if map.read(key).is_some_and(|old| bytes(&old) == bytes(value)) {
        return Ok(());
    }
    map.write(key, value)?;
    counted();
    Ok(())
}

/// Deletes `key`; a key already gone is not an error (and not a change).
pub(crate) fn erase<M: Erasable>(map: &mut M, key: impl Borrow<M::K>) -> Result<(), MapError> {
    match map.delete(key.borrow()) {
        Ok(()) => {
            counted();
            Ok(())
        }
        Err(e) => super::removed(Err(e)),
    }
}
