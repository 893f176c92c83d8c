//! Appending to a file through a writable shared mapping of space allocated
//! ahead ([`AppendMap`]), and allocating that space ([`allocate`]).
//!
//! A short append is then a copy into memory: no system call per write.
//! A long one ([`WRITE_THROUGH_MIN`] bytes or more) is one `pwrite` into
//! the same space instead, which is cheaper than the page faults its copy
//! would take. Either way the bytes are in the page cache when the append
//! returns, so they survive the process being killed; `fdatasync` of the
//! file makes them durable.
//! The space is allocated (`fallocate`) before it is mapped, so a full disk
//! is an error from [`AppendMap::append`], never a `SIGBUS` on a store, and
//! a sync of a write into allocated space does not have to grow the file
//! (it is about twice as fast as a sync of a true append on ext4).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

use crate::{Faults, FileOp, write_or_tear};

/// How much space [`AppendMap`] allocates at a time: one `fallocate` every
/// mebibyte appended. The allocated tail past the last append is zeros
/// until it is written or cut off ([`AppendMap::cut_tail`]).
pub const ALLOCATION_CHUNK: u64 = 1 << 20;

/// Appends of at least this many bytes are written with one `pwrite`
/// instead of being copied into the mapping.
///
/// The first store into each page of a shared file mapping takes a page
/// fault (the kernel finds or reads the page, then makes it writable:
/// `page_mkwrite`), and writing it back later must write-protect the
/// mapping's entry again; `pwrite` copies into the page cache without
/// touching page tables, for one system call (about a microsecond). On
/// ext4 (this project's test machines) copying an append of 16 KiB or more
/// through `pwrite` is about twice as fast as through the mapping, and a
/// 1 MiB one four to five times; below 4 KiB the mapping is faster.
pub const WRITE_THROUGH_MIN: usize = 16 * 1024;

/// Allocates `len` bytes of `file` at `offset` (`fallocate` with mode 0),
/// growing the file if they end past it. Where the file system cannot
/// allocate without writing, zeros are written instead. Checked as a
/// [`FileOp::Write`].
///
/// # Errors
///
/// The injected error; `ENOSPC` when the disk is full; any other error of
/// `fallocate` or of the writes.
pub fn allocate(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    faults: &Faults,
) -> io::Result<()> {
    faults.check(FileOp::Write, path)?;
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            write_zeros(file, offset, len)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = [0u8; 64 * 1024];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// A file appended through a writable shared mapping.
///
/// The first [`AppendMap::len`] bytes are written; the file is allocated
/// (and zero) up to [`AppendMap::allocated`], in steps of
/// [`ALLOCATION_CHUNK`], and mapped up to a capacity that grows when an
/// append needs it. A file left with its allocated tail (by a crash, say)
/// ends in zeros; its owner's recovery treats them as the end of the data.
#[derive(Debug)]
pub struct AppendMap {
    file: File,
    path: PathBuf,
    map: MmapMut,
    len: u64,
    allocated: u64,
    /// An allocation failed, and may have grown the file part of the way
    /// (`ENOSPC` midway, or the zeros cut short): the file can be longer
    /// than `allocated`, so the next [`AppendMap::truncate`] cuts it
    /// whatever `len` is.
    overrun: bool,
}

impl AppendMap {
    /// Maps `file` (opened for reading and writing), whose first `len`
    /// bytes are written, for appends up to `capacity` bytes (more are
    /// mapped when needed). The bytes of the file after `len` are the
    /// allocated tail; they must be zeros or be cut off
    /// ([`AppendMap::cut_tail`]) before a crash could expose them.
    ///
    /// # Errors
    ///
    /// Reading the file's length, or mapping it.
    pub fn new(file: File, path: PathBuf, len: u64, capacity: u64) -> io::Result<AppendMap> {
        let allocated = file.metadata()?.len().max(len);
        let map = map_mut(&file, capacity.max(allocated))?;
        Ok(AppendMap {
            file,
            path,
            map,
            len,
            allocated,
            overrun: false,
        })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of the file: what is written and the allocated tail.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Copies `bytes` to the end of the file, allocating space first when
    /// the allocated tail is too short: through the mapping, or with one
    /// `pwrite` from [`WRITE_THROUGH_MIN`] bytes on. Checked as a [`FileOp::Write`]
    /// (through [`write_or_tear`]: an injected failure copies half the
    /// bytes first, and they count as written, as a write cut short does).
    ///
    /// # Errors
    ///
    /// The injected error, or the error of [`allocate`] (`ENOSPC` on a full
    /// disk); nothing is copied then. The error of the `pwrite` (an I/O
    /// error); part of `bytes` may then be in the file after
    /// [`AppendMap::len`], and the owner cuts them off
    /// ([`AppendMap::truncate`]).
    pub fn append(&mut self, bytes: &[u8], faults: &Faults) -> io::Result<()> {
        self.append_as(bytes, faults, bytes.len() >= WRITE_THROUGH_MIN)
    }

    /// Like [`AppendMap::append`], but always with one `pwrite`, however
    /// short `bytes` is: for an owner that syncs the file right after.
    ///
    /// Syncing a page that was stored into through the mapping costs more
    /// than syncing one written with `pwrite`: writeback write-protects the
    /// mapping's entry for the page again (flushing it from the TLB of every
    /// core the process runs on) and the next store into the page faults.
    /// Measured on this project's test machines (2-core virtual machines,
    /// ext4), a WAL synced after every short commit did 5.6-6.0K commits/s
    /// through the mapping and 6.5-7.5K/s with `pwrite`.
    ///
    /// # Errors
    ///
    /// As [`AppendMap::append`].
    pub fn write_through(&mut self, bytes: &[u8], faults: &Faults) -> io::Result<()> {
        self.append_as(bytes, faults, true)
    }

    fn append_as(&mut self, bytes: &[u8], faults: &Faults, through: bool) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            let want = end.div_ceil(ALLOCATION_CHUNK) * ALLOCATION_CHUNK;
            let from = self.allocated;
            if let Err(e) = allocate(&self.file, &self.path, from, want - from, faults) {
                self.overrun = true;
                return Err(e);
            }
            self.allocated = want;
        }
        if through {
            let (file, len) = (&self.file, &mut self.len);
            return write_or_tear(faults, &self.path, bytes, |b| {
                // Into allocated space (`*len + b.len() <= allocated`), so
                // the file does not grow and no block is allocated.
                file.write_all_at(b, *len)?;
                *len += b.len() as u64;
                Ok(())
            });
        }
        if end > self.map.len() as u64 {
            self.map = map_mut(&self.file, (self.map.len() as u64 * 2).max(self.allocated))?;
        }
        let (map, len) = (&mut self.map, &mut self.len);
        write_or_tear(faults, &self.path, bytes, |b| {
            let at = *len as usize;
            map[at..at + b.len()].copy_from_slice(b);
            *len += b.len() as u64;
            Ok(())
        })
    }

    /// Forgets everything written after `len` and makes sure it cannot come
    /// back: the file is cut to `len` (so the allocated tail goes too).
    /// Does nothing if `len` is not below [`AppendMap::allocated`] and no
    /// allocation failed since the last cut (one that failed may have
    /// grown the file past what it knows). Not
    /// durable until the next sync.
    ///
    /// # Errors
    ///
    /// The error of the truncation; the file is as it was then.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        if len >= self.allocated && !self.overrun {
            return Ok(());
        }
        let len = len.min(self.allocated);
        self.file.set_len(len)?;
        self.overrun = false;
        self.allocated = len;
        self.len = self.len.min(len);
        Ok(())
    }

    /// Cuts the allocated tail off, so the file is exactly what is written.
    /// Not durable until the next sync.
    ///
    /// # Errors
    ///
    /// The error of the truncation.
    pub fn cut_tail(&mut self) -> io::Result<()> {
        self.truncate(self.len)
    }

    /// `fdatasync` of the file, after a [`FileOp::Sync`] check: makes every
    /// byte copied so far durable (the kernel writes back the mapping's
    /// dirty pages), and the file's length.
    ///
    /// # Errors
    ///
    /// The injected error or that of the sync. The owner must treat a
    /// failed sync as the crate docs say: it poisons itself.
    pub fn sync_data(&self, faults: &Faults) -> io::Result<()> {
        faults.check(FileOp::Sync, &self.path)?;
        self.file.sync_data()
    }
}

fn map_mut(file: &File, len: u64) -> io::Result<MmapMut> {
    let len = usize::try_from(len)
        .map_err(|_| io::Error::other("the file is larger than the address space"))?;
    // SAFETY: a writable shared map is unsafe because another mapping or
    // process may change or truncate the file underneath it. Only the
    // owner of an `AppendMap` writes the file, through this map or with
    // `pwrite` while no borrow of the map is alive, and only at or past
    // `len`; readers (kv-log's segments map the same
    // file read-only) read only bytes the owner has finished and published,
    // below `len`, so no byte is read while it is written. Stores go only to
    // bytes below `allocated`, which never exceeds the file's length (space
    // is allocated before it is written, and the file is cut only to or
    // below `allocated`), so no store reaches past the end of the file,
    // where it would raise SIGBUS. Another program changing or truncating
    // the file is outside the contract (docs/format.md, "Files are only
    // ours"), as for every mapped file of kv.
    #[expect(unsafe_code, reason = "mapping a file; see the SAFETY comment above")]
    unsafe {
        MmapOptions::new().len(len.max(1)).map_mut(file)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use super::*;

    fn open(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    /// A fault injector and the `Faults` it drives.
    fn injected() -> (std::sync::Arc<crate::FaultInjector>, Faults) {
        let injector = std::sync::Arc::new(crate::FaultInjector::new());
        let faults = Faults::from(std::sync::Arc::clone(&injector));
        (injector, faults)
    }

    #[test]
    fn appends_land_in_the_file_and_the_tail_is_zeros_until_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"head").unwrap();
        let faults = Faults::default();
        let mut map = AppendMap::new(open(&path), path.clone(), 4, 16).unwrap();
        map.append(b"-one", &faults).unwrap();
        map.append(&[7u8; 40], &faults).unwrap();
        assert_eq!(map.len(), 48);
        assert_eq!(map.allocated(), ALLOCATION_CHUNK);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, ALLOCATION_CHUNK);
        assert_eq!(&bytes[..8], b"head-one");
        assert!(bytes[8..48].iter().all(|&b| b == 7));
        assert!(bytes[48..].iter().all(|&b| b == 0));
        map.sync_data(&faults).unwrap();
        map.cut_tail().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 48);
    }

    #[test]
    fn an_append_past_the_mapping_maps_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let faults = Faults::default();
        let mut map = AppendMap::new(open(&path), path.clone(), 0, 8).unwrap();
        let big = vec![1u8; (ALLOCATION_CHUNK + 10) as usize];
        map.append(&big, &faults).unwrap();
        map.append(b"end", &faults).unwrap();
        map.cut_tail().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), big.len() + 3);
        assert_eq!(&bytes[big.len()..], b"end");
    }

    #[test]
    fn long_appends_are_written_through_and_mix_with_short_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let faults = Faults::default();
        let mut map = AppendMap::new(open(&path), path.clone(), 0, 64).unwrap();
        let long = |b: u8| vec![b; WRITE_THROUGH_MIN + 3];
        map.append(b"short", &faults).unwrap();
        map.append(&long(1), &faults).unwrap();
        map.append(b"-", &faults).unwrap();
        // Past the first allocation and the mapping, in one write.
        map.append(&vec![2u8; ALLOCATION_CHUNK as usize], &faults)
            .unwrap();
        map.append(&long(3), &faults).unwrap();
        // A short write-through, then a short copy into the same page.
        map.write_through(b"w", &faults).unwrap();
        map.append(b"end", &faults).unwrap();
        map.cut_tail().unwrap();
        let mut expected = b"short".to_vec();
        expected.extend(long(1));
        expected.push(b'-');
        expected.extend(vec![2u8; ALLOCATION_CHUNK as usize]);
        expected.extend(long(3));
        expected.extend_from_slice(b"wend");
        assert_eq!(map.len(), expected.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn truncate_cuts_written_bytes_and_later_appends_go_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let faults = Faults::default();
        let mut map = AppendMap::new(open(&path), path.clone(), 0, 64).unwrap();
        map.append(b"keep-drop", &faults).unwrap();
        map.truncate(4).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 4);
        map.append(b"!", &faults).unwrap();
        map.cut_tail().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"keep!");
    }

    #[test]
    fn a_cut_after_a_failed_allocation_cuts_whatever_it_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (injector, faults) = injected();
        let mut map = AppendMap::new(open(&path), path.clone(), 0, 64).unwrap();
        map.append(b"kept", &faults).unwrap();
        map.cut_tail().unwrap();
        // The next append must allocate; the allocation fails, and the file
        // is made longer behind the map's back, as a partial one would.
        injector.fail_next_write();
        map.append(b"lost", &faults).unwrap_err();
        map.file().set_len(4096).unwrap();
        map.cut_tail().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"kept");
    }

    #[test]
    fn an_injected_write_failure_tears_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (injector, faults) = injected();
        let mut map = AppendMap::new(open(&path), path.clone(), 0, 64).unwrap();
        map.append(b"ok", &faults).unwrap();
        // Space is allocated: the next append checks only its copy.
        injector.fail_next_write();
        map.append(b"torn", &faults).unwrap_err();
        assert_eq!(map.len(), 4, "half the bytes were copied");
        // A long one, written with pwrite, tears the same way.
        injector.fail_next_write();
        map.append(&vec![5u8; 2 * WRITE_THROUGH_MIN], &faults)
            .unwrap_err();
        assert_eq!(map.len(), 4 + WRITE_THROUGH_MIN as u64);
        map.truncate(4).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"okto");
    }
}
