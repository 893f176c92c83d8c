//! One mapped segment file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use crate::{LogError, Result};

/// One segment file, mapped read-only.
///
/// The map may be longer than the file (the active segment is mapped at its
/// full capacity); only the first [`Segment::len`] bytes are ever read.
#[derive(Debug)]
pub struct Segment {
    id: u32,
    path: PathBuf,
    map: Mmap,
    /// Bytes at the front of the file that are completely written and may
    /// be read. Only grows; published with release ordering after the bytes
    /// are in the file.
    readable: AtomicU64,
    sealed: AtomicBool,
}

impl Segment {
    /// Maps `file`, whose first `readable` bytes are valid, with room for
    /// the file to grow to `capacity` bytes underneath the map.
    pub(crate) fn map(
        id: u32,
        path: PathBuf,
        file: &File,
        readable: u64,
        capacity: u64,
        sealed: bool,
    ) -> Result<Segment> {
        let capacity = capacity.max(readable);
        let len = usize::try_from(capacity).map_err(|_| {
            LogError::io(
                &path,
                std::io::Error::other("segment is larger than the address space"),
            )
        })?;
        // SAFETY: memmap2 maps are unsafe because the file may change or
        // shrink underneath the map. The directory is held under an
        // exclusive lock by one process, segment bytes below `readable` are
        // never rewritten, and no file is truncated below a published
        // `readable` length while mapped (the only truncation, of a torn
        // tail at open, happens before anything past it is published). Bytes
        // past the end of the file are never read: every read is bounded by
        // `readable`, which never exceeds the file's length. A file changed
        // or truncated by another program breaks these assumptions and can
        // raise SIGBUS; that is outside the contract (see ARCHITECTURE.md).
        #[allow(unsafe_code)]
        let map =
            unsafe { MmapOptions::new().len(len).map(file) }.map_err(|e| LogError::io(&path, e))?;
        Ok(Segment {
            id,
            path,
            map,
            readable: AtomicU64::new(readable),
            sealed: AtomicBool::new(sealed),
        })
    }

    /// The segment's id, which is also its file name.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The path of the segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of bytes readable, header included.
    pub fn len(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// Whether the segment holds only its header.
    pub fn is_empty(&self) -> bool {
        self.len() <= crate::SEGMENT_HEADER_LEN as u64
    }

    /// Whether the segment is sealed: it will never be written again.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The readable bytes of the segment, header included.
    pub fn bytes(&self) -> &[u8] {
        let len = self.len();
        // `readable` never exceeds the map's length (checked when it is
        // published), so this cannot fail; fall back to empty all the same.
        self.map.get(..len as usize).unwrap_or(&[])
    }

    /// The `len` bytes at `offset`, borrowed from the map.
    ///
    /// # Errors
    ///
    /// [`LogError::OutOfBounds`] when the range is not within the readable
    /// part of the segment.
    pub fn read(&self, offset: u32, len: u32) -> Result<&[u8]> {
        let end = self.len();
        let start = u64::from(offset);
        let stop = start + u64::from(len);
        if stop > end {
            return Err(LogError::OutOfBounds {
                segment: self.id,
                offset,
                len,
                end,
            });
        }
        Ok(&self.map[start as usize..stop as usize])
    }

    /// The capacity of the map: how far the file may grow.
    pub(crate) fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Makes the first `len` bytes readable. They must be in the file.
    pub(crate) fn publish(&self, len: u64) {
        debug_assert!(len <= self.capacity());
        self.readable
            .store(len.min(self.capacity()), Ordering::Release);
    }

    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }
}
