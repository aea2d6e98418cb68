//! A sorted map of byte strings packed into prefix-compressed blocks.
//!
//! The state machine keeps a queue's message keys (heads, body references,
//! the ready, due and sent indexes) in memory. In a `BTreeMap` of vectors
//! each of them costs two allocations and some 150 bytes of overhead on top
//! of a 31-byte key that repeats its queue's 18-byte prefix: about 430
//! bytes a message in all. Here the pairs are packed in key order into
//! blocks of about [`BLOCK_BYTES`], each key stored as the length it shares
//! with the one before it and the rest, as an SSTable block stores them: a
//! message then costs its values and a few bytes per key.
//!
//! Writes come in sorted batches ([`Packed::apply`]): each block they touch
//! is decoded, merged and encoded again once per batch. A queue's new
//! messages land in the last blocks of its key families and its deleted
//! ones leave the first, so a batch touches few blocks. Loading a snapshot,
//! whose records come in key order, appends ([`Packed::push`]).
//!
//! The map holds values only: no removals. Reads return owned pairs, as the
//! storage engine's do.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{Kv, KvIter};

/// Encoded bytes a block grows to before a new one starts. Small, so that a
/// read decodes little to find its key: about 8 message bodies' references
/// or 60 index keys.
pub const BLOCK_BYTES: usize = 1024;

/// What a block costs beyond its encoded pairs, about: its entry in the
/// block map (its first key is counted apart) and its allocation.
const BLOCK_OVERHEAD: usize = 128;

/// A sorted map from byte strings to byte strings, packed.
#[derive(Debug, Default, Clone)]
pub struct Packed {
    /// The blocks by their first key. Shared between clones: a change
    /// replaces the blocks it touches, so a clone (a snapshot being
    /// written) costs the map, not the pairs.
    blocks: BTreeMap<Vec<u8>, Arc<Block>>,
    /// Pairs held.
    len: usize,
    /// Bytes held, blocks and their keys in the block map, about.
    bytes: usize,
    /// The last key, while pairs are pushed (`None` once anything else
    /// changed the map): decoding it again for each push would cost a block.
    tail: Option<Vec<u8>>,
}

/// Pairs in key order, each as: shared prefix length with the key before
/// (varint; 0 for the first), the rest of the key's length (varint) and
/// bytes, the value's length (varint) and bytes.
#[derive(Debug, Default, Clone)]
struct Block {
    data: Vec<u8>,
    len: usize,
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint(data: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = data[*at];
        *at += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b < 0x80 {
            return n;
        }
        shift += 7;
    }
}

fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Block {
    /// Appends a pair whose key sorts after every key in the block; `last`
    /// is the block's last key (empty for an empty block), updated.
    fn push(&mut self, last: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        let shared = if self.len == 0 {
            0
        } else {
            shared_prefix(last, key)
        };
        put_varint(&mut self.data, shared);
        put_varint(&mut self.data, key.len() - shared);
        self.data.extend_from_slice(&key[shared..]);
        put_varint(&mut self.data, value.len());
        self.data.extend_from_slice(value);
        self.len += 1;
        last.truncate(shared);
        last.extend_from_slice(&key[shared..]);
    }

    /// The pairs in key order.
    fn pairs(&self) -> Pairs<'_> {
        Pairs {
            data: &self.data,
            at: 0,
            key: Vec::new(),
        }
    }

    /// Bytes this block costs, its first key `first` included.
    fn cost(&self, first: &[u8]) -> usize {
        BLOCK_OVERHEAD + first.len() + self.data.len()
    }

    /// The block's last key, decoded.
    fn last_key(&self) -> Vec<u8> {
        let mut pairs = self.pairs();
        while pairs.advance().is_some() {}
        pairs.key
    }
}

/// A block's pairs, decoded one by one.
struct Pairs<'a> {
    data: &'a [u8],
    at: usize,
    /// The key of the pair last returned.
    key: Vec<u8>,
}

impl<'a> Pairs<'a> {
    /// Moves to the next pair; its key is then in `self.key`.
    fn advance(&mut self) -> Option<&'a [u8]> {
        if self.at >= self.data.len() {
            return None;
        }
        let shared = varint(self.data, &mut self.at);
        let rest = varint(self.data, &mut self.at);
        self.key.truncate(shared);
        self.key
            .extend_from_slice(&self.data[self.at..self.at + rest]);
        self.at += rest;
        let len = varint(self.data, &mut self.at);
        let value = &self.data[self.at..self.at + len];
        self.at += len;
        Some(value)
    }
}

impl Iterator for Pairs<'_> {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        let value = self.advance()?;
        Some((self.key.clone(), value.to_vec()))
    }
}

/// Packs sorted pairs into blocks of about [`BLOCK_BYTES`].
fn pack(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Block)> {
    let mut out: Vec<(Vec<u8>, Block)> = Vec::new();
    let mut last = Vec::new();
    for (k, v) in pairs {
        match out.last_mut() {
            Some((_, block)) if block.data.len() < BLOCK_BYTES => block.push(&mut last, &k, &v),
            _ => {
                let mut block = Block::default();
                block.push(&mut last, &k, &v);
                out.push((k, block));
            }
        }
    }
    for (_, block) in &mut out {
        block.data.shrink_to_fit();
    }
    out
}

/// Whether `key` lies below the range's `end`.
fn before_end(key: &[u8], end: &Bound<Vec<u8>>) -> bool {
    match end {
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
        Bound::Unbounded => true,
    }
}

/// Whether `key` lies at or past the range's `start`.
fn after_start(key: &[u8], start: &Bound<Vec<u8>>) -> bool {
    match start {
        Bound::Included(s) => key >= s.as_slice(),
        Bound::Excluded(s) => key > s.as_slice(),
        Bound::Unbounded => true,
    }
}

impl Packed {
    /// An empty map.
    pub fn new() -> Packed {
        Packed::default()
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the map takes, about (its allocations' slack aside).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Removes every pair.
    pub fn clear(&mut self) {
        *self = Packed::default();
    }

    /// The first key of the block that holds `key` or would hold it.
    fn block_for(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .or_else(|| self.blocks.iter().next())
            .map(|(k, _)| k)
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (_, block) = self
            .blocks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let mut pairs = block.pairs();
        while let Some(value) = pairs.advance() {
            match pairs.key.as_slice().cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(value.to_vec()),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// Appends a pair whose key sorts after every key held (a snapshot's
    /// records come in key order).
    ///
    /// # Panics
    ///
    /// When `key` does not sort after the last key held.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let mut last = match self.tail.take() {
            Some(last) => last,
            None => self
                .blocks
                .last_key_value()
                .map_or_else(Vec::new, |(_, b)| b.last_key()),
        };
        assert!(
            self.is_empty() || last.as_slice() < key,
            "packed pairs pushed out of order"
        );
        let mut entry = match self.blocks.last_entry() {
            Some(entry) if entry.get().data.len() < BLOCK_BYTES => entry,
            full => {
                // Done growing: give back what doubling left spare.
                if let Some(mut full) = full {
                    Arc::make_mut(full.get_mut()).data.shrink_to_fit();
                }
                self.bytes += BLOCK_OVERHEAD + key.len();
                self.blocks.insert(key.to_vec(), Arc::default());
                self.blocks.last_entry().expect("the block just made")
            }
        };
        // A new block's first key is stored whole (`Block::push`).
        let block = Arc::make_mut(entry.get_mut());
        let before = block.data.len();
        block.push(&mut last, key, value);
        self.bytes += block.data.len() - before;
        self.len += 1;
        self.tail = Some(last);
    }

    /// Applies sorted writes: a value sets its key, `None` removes it.
    pub fn apply<'a, I>(&mut self, writes: I)
    where
        I: IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    {
        self.tail = None;
        let mut writes = writes.into_iter().peekable();
        while let Some(&(key, _)) = writes.peek() {
            // The block the next write falls in, and the writes that fall
            // in it too (those before the next block's first key).
            let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut next = match self.block_for(key).cloned() {
                Some(first) => {
                    let block = self.blocks.remove(&first).expect("the block found");
                    self.bytes -= block.cost(&first);
                    self.len -= block.len;
                    merged.extend(block.pairs());
                    self.blocks
                        .range::<[u8], _>((Bound::Excluded(first.as_slice()), Bound::Unbounded))
                        .next()
                        .map(|(k, _)| k.clone())
                }
                None => None,
            };
            loop {
                let mut batch: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
                while let Some(&(k, v)) = writes.peek() {
                    if next.as_ref().is_some_and(|n| k >= n.as_slice()) {
                        break;
                    }
                    debug_assert!(batch.last().is_none_or(|(last, _)| *last < k));
                    batch.push((k, v));
                    writes.next();
                }
                merged = merge(merged, batch);
                // A block left small takes in the one after it, so that
                // removals do not leave the map in slivers.
                let size: usize = merged.iter().map(|(k, v)| k.len() + v.len()).sum();
                match next.take() {
                    Some(first) if size < BLOCK_BYTES / 2 => {
                        let block = self.blocks.remove(&first).expect("the next block");
                        self.bytes -= block.cost(&first);
                        self.len -= block.len;
                        merged.extend(block.pairs());
                        next = self
                            .blocks
                            .range::<[u8], _>((Bound::Excluded(first.as_slice()), Bound::Unbounded))
                            .next()
                            .map(|(k, _)| k.clone());
                    }
                    _ => break,
                }
            }
            self.len += merged.len();
            for (first, block) in pack(merged) {
                self.bytes += block.cost(&first);
                self.blocks.insert(first, Arc::new(block));
            }
        }
    }

    /// The pairs between `start` and `end`, in key order or, when
    /// `reverse`, in reverse.
    pub fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> Range<'_> {
        let empty = super::is_empty_range(&start, &end);
        // Blocks from the one that holds `start` to the last that starts
        // before `end`.
        let from = match &start {
            Bound::Unbounded => None,
            Bound::Included(s) | Bound::Excluded(s) => self
                .blocks
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(s.as_slice())))
                .next_back()
                .map(|(k, _)| k.clone()),
        };
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let blocks = if empty
            || matches!((&lower, &end), (Bound::Included(l), Bound::Included(e) | Bound::Excluded(e)) if l > e)
        {
            None
        } else {
            Some(self.blocks.range((lower, end.clone())))
        };
        Range {
            blocks,
            pending: Vec::new().into_iter(),
            start,
            end,
            reverse,
        }
    }
}

/// What a file of a packed map starts with: what it is, then its format.
const FILE_MAGIC: &[u8; 14] = b"sluice-packed\n";
/// The format of the files [`Packed::write_file`] writes: the magic, this
/// number (u32), the block count (u64), each block as its first key, pair
/// count and data (lengths as u32), then a CRC-32 of all before it.
const FILE_FORMAT: u32 = 1;

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Reads from a file, hashing what it reads.
struct Hashed<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Hashed<R> {
    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.inner.read_exact(&mut buf)?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// A varint at `at` of `data`, or `None` past its end.
fn checked_varint(data: &[u8], at: &mut usize) -> Option<usize> {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = *data.get(*at)?;
        *at += 1;
        if shift > 56 {
            return None;
        }
        n |= ((b & 0x7f) as usize) << shift;
        if b < 0x80 {
            return Some(n);
        }
        shift += 7;
    }
}

/// Whether `block` decodes whole, starting with `first`, into `count`
/// pairs in ascending key order, all after `after`; its last key.
fn check_block(block: &Block, first: &[u8], after: Option<&[u8]>) -> Option<Vec<u8>> {
    let (data, mut at, mut key) = (&block.data, 0, Vec::new());
    for i in 0..block.len {
        let shared = checked_varint(data, &mut at)?;
        let rest = checked_varint(data, &mut at)?;
        if shared > key.len() || (i == 0 && shared != 0) {
            return None;
        }
        let previous = std::mem::take(&mut key);
        key.extend_from_slice(&previous[..shared]);
        key.extend_from_slice(data.get(at..at.checked_add(rest)?)?);
        at += rest;
        let len = checked_varint(data, &mut at)?;
        data.get(at..at.checked_add(len)?)?;
        at += len;
        let in_order = if i == 0 {
            key == first && after.is_none_or(|a| a < first)
        } else {
            previous < key
        };
        if !in_order {
            return None;
        }
    }
    (at == data.len() && block.len > 0).then_some(key)
}

impl Packed {
    /// Writes the map to `path` durably: into a temporary file, synced,
    /// renamed over `path`, and the directory synced.
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let mut out = io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut crc = crc32fast::Hasher::new();
        let mut put = |out: &mut io::BufWriter<std::fs::File>, bytes: &[u8]| {
            crc.update(bytes);
            out.write_all(bytes)
        };
        put(&mut out, FILE_MAGIC)?;
        put(&mut out, &FILE_FORMAT.to_le_bytes())?;
        put(&mut out, &(self.blocks.len() as u64).to_le_bytes())?;
        for (first, block) in &self.blocks {
            let len = |n: usize| u32::try_from(n).map_err(io::Error::other);
            put(&mut out, &len(first.len())?.to_le_bytes())?;
            put(&mut out, first)?;
            put(&mut out, &len(block.len)?.to_le_bytes())?;
            put(&mut out, &len(block.data.len())?.to_le_bytes())?;
            put(&mut out, &block.data)?;
        }
        let sum = crc.finalize();
        out.write_all(&sum.to_le_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Reads a map [`Packed::write_file`] wrote, refusing a file of another
    /// kind or format, cut short, or whose checksum or blocks do not hold.
    pub fn read_file(path: &Path) -> io::Result<Packed> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut r = Hashed {
            inner: io::BufReader::new(file),
            crc: crc32fast::Hasher::new(),
        };
        let short = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt(path, "cut short"),
            _ => e,
        };
        if r.bytes(FILE_MAGIC.len()).map_err(short)? != FILE_MAGIC {
            return Err(corrupt(path, "not a packed map file"));
        }
        let format = r.u32().map_err(short)?;
        if format != FILE_FORMAT {
            return Err(corrupt(
                path,
                &format!("packed map format {format}; this build reads format {FILE_FORMAT} only"),
            ));
        }
        let mut map = Packed::new();
        let mut last: Option<Vec<u8>> = None;
        for _ in 0..r.u64().map_err(short)? {
            // Lengths are checked against the file's size before anything
            // is allocated for them: a damaged length fails, never balloons.
            let take = |r: &mut Hashed<_>| -> io::Result<Vec<u8>> {
                let n = r.u32().map_err(short)? as u64;
                if n > size {
                    return Err(corrupt(path, "a length runs past the end of the file"));
                }
                r.bytes(n as usize).map_err(short)
            };
            let first = take(&mut r)?;
            let len = r.u32().map_err(short)? as usize;
            let data = take(&mut r)?;
            let block = Block { data, len };
            last = Some(
                check_block(&block, &first, last.as_deref())
                    .ok_or_else(|| corrupt(path, "a block does not decode in key order"))?,
            );
            map.len += block.len;
            map.bytes += block.cost(&first);
            map.blocks.insert(first, Arc::new(block));
        }
        let sum = r.crc.clone().finalize();
        let mut stored = [0; 4];
        r.inner.read_exact(&mut stored).map_err(short)?;
        if u32::from_le_bytes(stored) != sum {
            return Err(corrupt(path, "checksum mismatch"));
        }
        if r.inner.read(&mut [0])? != 0 {
            return Err(corrupt(path, "bytes after the checksum"));
        }
        Ok(map)
    }
}

/// `pairs` with the sorted `writes` applied.
fn merge(
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    writes: Vec<(&[u8], Option<&[u8]>)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(pairs.len() + writes.len());
    let mut pairs = pairs.into_iter().peekable();
    for (k, v) in writes {
        while let Some((pk, _)) = pairs.peek() {
            if pk.as_slice() >= k {
                break;
            }
            out.extend(pairs.next());
        }
        if pairs.peek().is_some_and(|(pk, _)| pk.as_slice() == k) {
            pairs.next();
        }
        if let Some(v) = v {
            out.push((k.to_vec(), v.to_vec()));
        }
    }
    out.extend(pairs);
    out
}

/// The pairs of a [`Packed::range`].
pub struct Range<'a> {
    blocks: Option<std::collections::btree_map::Range<'a, Vec<u8>, Arc<Block>>>,
    /// The current block's pairs in the range, in the order returned.
    pending: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
}

impl Iterator for Range<'_> {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pair) = self.pending.next() {
                return Some(pair);
            }
            let blocks = self.blocks.as_mut()?;
            let (_, block) = if self.reverse {
                blocks.next_back()?
            } else {
                blocks.next()?
            };
            let mut pairs: Vec<_> = block
                .pairs()
                .filter(|(k, _)| after_start(k, &self.start) && before_end(k, &self.end))
                .collect();
            if self.reverse {
                pairs.reverse();
            }
            self.pending = pairs.into_iter();
        }
    }
}

/// `upper`'s pairs laid over `lower`'s, both read from the same range in
/// the same direction: on a key both hold, `upper`'s value wins.
pub fn over<'a>(upper: Range<'a>, lower: KvIter<'a>, reverse: bool) -> KvIter<'a> {
    Box::new(Over {
        upper: upper.peekable(),
        lower: lower.peekable(),
        reverse,
    })
}

struct Over<'a> {
    upper: std::iter::Peekable<Range<'a>>,
    lower: std::iter::Peekable<KvIter<'a>>,
    reverse: bool,
}

impl Iterator for Over<'_> {
    type Item = Result<Kv, super::StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.upper.peek(), self.lower.peek()) {
            (None, _) | (Some(_), Some(Err(_))) => return self.lower.next(),
            (Some(_), None) => return self.upper.next().map(Ok),
            (Some((uk, _)), Some(Ok((lk, _)))) => {
                let o = uk.as_slice().cmp(lk.as_slice());
                if self.reverse {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        match order {
            std::cmp::Ordering::Less => self.upper.next().map(Ok),
            std::cmp::Ordering::Greater => self.lower.next(),
            std::cmp::Ordering::Equal => {
                self.lower.next();
                self.upper.next().map(Ok)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_rng::Rng;

    /// Keys shaped like a queue's: a shared prefix, a family, a number.
    fn key(rng: &mut Rng) -> Vec<u8> {
        let family =
            [&b"m/q1/head/"[..], b"m/q1/ready/", b"m/q2/head/", b"z"][rng.below(4) as usize];
        let mut k = family.to_vec();
        k.extend_from_slice(&rng.below(3_000).to_be_bytes());
        k
    }

    fn bound(rng: &mut Rng) -> Bound<Vec<u8>> {
        match rng.below(3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(key(rng)),
            _ => Bound::Excluded(key(rng)),
        }
    }

    /// Random batches of writes, and reads between them, agree with a
    /// `BTreeMap` given the same.
    #[test]
    fn reads_and_writes_agree_with_an_ordinary_map() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut packed = Packed::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            // Begun as a snapshot loads it, by pushes in key order.
            for _ in 0..rng.below(600) {
                model.insert(key(&mut rng), vec![7; rng.below(40) as usize]);
            }
            for (k, v) in &model {
                packed.push(k, v);
            }
            for round in 0..100 {
                let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
                // Mostly runs of neighbouring keys, as a queue writes them.
                let n = rng.below(200);
                let mut k = key(&mut rng);
                for _ in 0..n {
                    if rng.below(10) == 0 {
                        k = key(&mut rng);
                    } else {
                        k.push(0);
                    }
                    let v = match rng.below(3) {
                        0 => None,
                        1 => Some(Vec::new()),
                        _ => Some(vec![round as u8; rng.below(120) as usize]),
                    };
                    writes.insert(k.clone(), v);
                }
                // Half the time, remove a stretch of what is held.
                if rng.below(2) == 0 {
                    let from = key(&mut rng);
                    for k in model
                        .range(from..)
                        .take(rng.below(400) as usize)
                        .map(|(k, _)| k)
                    {
                        writes.insert(k.clone(), None);
                    }
                }
                packed.apply(writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
                for (k, v) in writes {
                    match v {
                        Some(v) => model.insert(k, v),
                        None => model.remove(&k),
                    };
                }
                assert_eq!(packed.len(), model.len(), "seed {seed} round {round}");
                for _ in 0..20 {
                    let k = key(&mut rng);
                    assert_eq!(packed.get(&k), model.get(&k).cloned(), "seed {seed}");
                }
                for _ in 0..5 {
                    let (start, end, reverse) =
                        (bound(&mut rng), bound(&mut rng), rng.below(2) == 0);
                    let got: Vec<_> = packed.range(start.clone(), end.clone(), reverse).collect();
                    let want: Vec<_> = if super::super::is_empty_range(&start, &end) {
                        Vec::new()
                    } else if reverse {
                        model
                            .range((start, end))
                            .rev()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        model
                            .range((start, end))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    assert_eq!(got, want, "seed {seed} round {round}");
                }
            }
            let all: Vec<_> = packed
                .range(Bound::Unbounded, Bound::Unbounded, false)
                .collect();
            let want: Vec<_> = model.into_iter().collect();
            assert_eq!(all, want, "seed {seed}");
        }
    }

    /// Pairs pushed in order read back as written, and pack tightly.
    #[test]
    fn pushed_pairs_read_back_and_pack_tightly() {
        let mut packed = Packed::new();
        let mut keys = Vec::new();
        for seq in 0..100_000u64 {
            let mut k =
                b"m/\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00ready\x00"
                    .to_vec();
            k.extend_from_slice(&seq.to_be_bytes());
            packed.push(&k, b"");
            keys.push(k);
        }
        assert_eq!(packed.len(), 100_000);
        assert_eq!(packed.get(&keys[77_777]), Some(Vec::new()));
        // 32-byte keys that differ in their last byte or two.
        let per_key = packed.bytes() as f64 / 100_000.0;
        assert!(per_key < 8.0, "{per_key} bytes a key");
        let read: Vec<_> = packed
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(read, keys);
    }

    fn sample() -> Packed {
        let mut packed = Packed::new();
        for seq in 0..5_000u64 {
            let mut k = b"m/q/head/".to_vec();
            k.extend_from_slice(&seq.to_be_bytes());
            packed.push(&k, format!("value {seq}").as_bytes());
        }
        packed
    }

    fn everything(p: &Packed) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.range(Bound::Unbounded, Bound::Unbounded, false).collect()
    }

    #[test]
    fn a_written_file_reads_back_as_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("map");
        let packed = sample();
        packed.write_file(&path).unwrap();
        let read = Packed::read_file(&path).unwrap();
        assert_eq!(everything(&read), everything(&packed));
        assert_eq!((read.len(), read.bytes()), (packed.len(), packed.bytes()));
        Packed::new().write_file(&path).unwrap();
        assert!(Packed::read_file(&path).unwrap().is_empty());
    }

    /// Every damage is refused with what was wrong, never misread and
    /// never a panic: a flipped byte anywhere, a cut anywhere, another
    /// format, another kind of file.
    #[test]
    fn a_damaged_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        sample().write_file(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let damaged = dir.path().join("damaged");
        let mut rng = Rng(7);
        for _ in 0..300 {
            let mut bytes = good.clone();
            if rng.below(2) == 0 {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            } else {
                bytes.truncate(rng.below(bytes.len() as u64) as usize);
            }
            std::fs::write(&damaged, &bytes).unwrap();
            let e = Packed::read_file(&damaged).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
        let mut other = good.clone();
        other[FILE_MAGIC.len()] = 9;
        std::fs::write(&damaged, &other).unwrap();
        let e = Packed::read_file(&damaged).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
        std::fs::write(&damaged, b"sluice-data-format 10\n").unwrap();
        let e = Packed::read_file(&damaged).unwrap_err().to_string();
        assert!(e.contains("not a packed map file"), "{e}");
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn a_push_out_of_order_is_refused() {
        let mut packed = Packed::new();
        packed.push(b"b", b"");
        packed.push(b"a", b"");
    }
}
