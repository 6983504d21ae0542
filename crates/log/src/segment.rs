//! Append-only logs of checksummed records, in segment files.
//!
//! A record is framed as `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`.
//! Segment files are named by the index of their first record (`00000000000000000001.seg`)
//! and hold at most [`SegmentOptions::segment_bytes_max`] bytes, unless one record is
//! larger. Indexes start at 1 and have no gaps.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::Error;

/// Largest record payload accepted, in bytes.
pub const RECORD_BYTES_MAX: usize = 16 << 20;
const FRAME_HEADER_BYTES: usize = 8;
/// A reader can start scanning at every this many records without reading from the
/// start of the segment.
const SPARSE_INDEX_EVERY: u64 = 64;

#[derive(Clone, Debug)]
pub struct SegmentOptions {
    pub segment_bytes_max: u64,
    /// Whether the oldest segments may have been removed on purpose
    /// ([`SegmentLog::remove_segments_before`]), so that the first one starts past 1.
    /// The command log keeps this false: a missing first segment there is damage.
    pub trimmed_start: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            segment_bytes_max: 64 << 20,
            trimmed_start: false,
        }
    }
}

/// One segment of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_index: u64,
    pub records: u64,
    /// Bytes written and synced.
    pub bytes: u64,
}

/// What opening a log found.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub records: u64,
    /// A torn tail that was cut off: the file and the number of bytes removed.
    pub truncated: Option<(PathBuf, u64)>,
}

#[derive(Clone, Debug)]
struct SegmentMeta {
    first_index: u64,
    path: PathBuf,
    /// Bytes that are written and synced.
    len: u64,
    count: u64,
    /// `(index, byte offset)` of every [`SPARSE_INDEX_EVERY`]th record.
    sparse: Vec<(u64, u64)>,
}

impl SegmentMeta {
    fn new(first_index: u64, path: PathBuf) -> SegmentMeta {
        SegmentMeta {
            first_index,
            path,
            len: 0,
            count: 0,
            sparse: Vec::new(),
        }
    }

    /// Counts one more record, found at `offset`.
    fn add_record(&mut self, index: u64, offset: u64) {
        if self.count.is_multiple_of(SPARSE_INDEX_EVERY) {
            self.sparse.push((index, offset));
        }
        self.count += 1;
    }
}

/// An append-only segmented log. One writer; any number of [`LogReader`]s.
pub struct SegmentLog {
    dir: PathBuf,
    options: SegmentOptions,
    active: File,
    active_len: u64,
    next_index: u64,
    /// Frames appended since the last sync.
    pending: Vec<u8>,
    pending_first_index: u64,
    pending_offsets: Vec<u64>,
    metas: Arc<RwLock<Vec<SegmentMeta>>>,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, checks every record, cuts a torn tail off
    /// the last segment, and hands each record from `deliver_from` on to `on_record`.
    /// Damage anywhere but the tail is an [`Error::Corrupt`] naming file and offset.
    pub fn open(
        dir: &Path,
        options: SegmentOptions,
        deliver_from: u64,
        mut on_record: impl FnMut(u64, &[u8]) -> Result<(), Error>,
    ) -> Result<(SegmentLog, OpenReport), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut files = list_segments(dir)?;
        let mut report = OpenReport::default();
        let mut metas = Vec::new();
        let mut next_index = 1;
        if files.is_empty() {
            files.push((1, dir.join(segment_name(1))));
            File::create(&files[0].1).map_err(Error::io(&files[0].1))?;
            sync_dir(dir)?;
        }
        if options.trimmed_start {
            next_index = files[0].0;
        }
        let last = files.len() - 1;
        for (position, (first_index, path)) in files.iter().enumerate() {
            if *first_index != next_index {
                return Err(Error::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at record {first_index}, expected {next_index}"
                    ),
                });
            }
            let data = std::fs::read(path).map_err(Error::io(path))?;
            let mut meta = SegmentMeta::new(*first_index, path.clone());
            let mut offset = 0usize;
            while offset < data.len() {
                match parse_frame(&data[offset..]) {
                    Ok(payload) => {
                        let index = next_index;
                        meta.add_record(index, offset as u64);
                        if index >= deliver_from {
                            on_record(index, payload)?;
                        }
                        offset += FRAME_HEADER_BYTES + payload.len();
                        next_index += 1;
                    }
                    Err(reason) => {
                        let rest = &data[offset..];
                        let frame_reaches_end = frame_end(rest).is_none_or(|end| end >= rest.len());
                        let torn =
                            position == last && (frame_reaches_end || rest.iter().all(|b| *b == 0));
                        if !torn {
                            return Err(Error::Corrupt {
                                path: path.clone(),
                                offset: offset as u64,
                                reason,
                            });
                        }
                        let cut = (data.len() - offset) as u64;
                        tracing::warn!(file = %path.display(), offset, bytes = cut, "cutting a torn tail off the log ({reason})");
                        let file = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(Error::io(path))?;
                        file.set_len(offset as u64).map_err(Error::io(path))?;
                        file.sync_all().map_err(Error::io(path))?;
                        report.truncated = Some((path.clone(), cut));
                        break;
                    }
                }
            }
            meta.len = offset as u64;
            metas.push(meta);
        }
        report.records = next_index - 1;
        let active_meta = metas.last().expect("at least one segment");
        let active = OpenOptions::new()
            .append(true)
            .open(&active_meta.path)
            .map_err(Error::io(&active_meta.path))?;
        let active_len = active_meta.len;
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            options,
            active,
            active_len,
            next_index,
            pending: Vec::new(),
            pending_first_index: next_index,
            pending_offsets: Vec::new(),
            metas: Arc::new(RwLock::new(metas)),
        };
        Ok((log, report))
    }

    /// Makes `dir` a new, empty log whose first record will be `first_index` (what
    /// was in `dir` is deleted): a copy of a log whose start was dropped elsewhere.
    /// Opens it with `trimmed_start`.
    pub fn create_at(
        dir: &Path,
        options: SegmentOptions,
        first_index: u64,
    ) -> Result<SegmentLog, Error> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(Error::io(dir))?;
        }
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join(segment_name(first_index.max(1)));
        File::create(&path).map_err(Error::io(&path))?;
        sync_dir(dir)?;
        let options = SegmentOptions {
            trimmed_start: true,
            ..options
        };
        let (log, _) = SegmentLog::open(dir, options, u64::MAX, |_, _| Ok(()))?;
        Ok(log)
    }

    /// Deletes whole closed segments all of whose records come before `index`
    /// (retention). Returns the number of segment files removed.
    pub fn remove_segments_before(&mut self, index: u64) -> Result<usize, Error> {
        self.take_segments_before(index, None)
    }

    /// Takes whole closed segments all of whose records come before `index` out of
    /// the log: deleted, or moved into the directory `into` (created if needed, on
    /// the same file system). Returns the number of segment files taken.
    pub fn take_segments_before(
        &mut self,
        index: u64,
        into: Option<&Path>,
    ) -> Result<usize, Error> {
        let doomed: Vec<PathBuf> = {
            let mut metas = self.metas.write().expect("segment metadata lock");
            let mut doomed = Vec::new();
            while metas.len() > 1 && metas[1].first_index <= index {
                doomed.push(metas.remove(0).path);
            }
            doomed
        };
        if let Some(into) = into.filter(|_| !doomed.is_empty()) {
            std::fs::create_dir_all(into).map_err(Error::io(into))?;
        }
        for path in &doomed {
            match into {
                None => std::fs::remove_file(path).map_err(Error::io(path))?,
                Some(into) => {
                    let to = into.join(path.file_name().expect("segment files have names"));
                    std::fs::rename(path, &to).map_err(Error::io(&to))?;
                }
            }
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
            if let Some(into) = into {
                sync_dir(into)?;
            }
        }
        Ok(doomed.len())
    }

    /// The segments, oldest first (the last is the one being written).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.metas
            .read()
            .expect("segment metadata lock")
            .iter()
            .map(|meta| SegmentInfo {
                first_index: meta.first_index,
                records: meta.count,
                bytes: meta.len,
            })
            .collect()
    }

    /// Index the next appended record will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Buffers one record; it is durable after the next [`SegmentLog::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, Error> {
        if payload.is_empty() || payload.len() > RECORD_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                bytes: payload.len(),
                max: RECORD_BYTES_MAX,
            });
        }
        let frame_bytes = (FRAME_HEADER_BYTES + payload.len()) as u64;
        let used = self.active_len + self.pending.len() as u64;
        if used > 0 && used + frame_bytes > self.options.segment_bytes_max {
            self.roll()?;
        }
        self.pending_offsets
            .push(self.active_len + self.pending.len() as u64);
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.pending.extend_from_slice(payload);
        let index = self.next_index;
        self.next_index += 1;
        Ok(index)
    }

    /// Writes buffered records and waits until they are on disk (one `fdatasync`).
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_pending()?;
        let path = self.active_path();
        self.active.sync_data().map_err(Error::io(path))?;
        self.publish();
        Ok(())
    }

    /// A reader that sees every synced record.
    pub fn reader(&self) -> LogReader {
        LogReader {
            metas: Arc::clone(&self.metas),
        }
    }

    fn active_path(&self) -> PathBuf {
        self.metas
            .read()
            .expect("segment metadata lock")
            .last()
            .expect("a segment")
            .path
            .clone()
    }

    fn write_pending(&mut self) -> Result<(), Error> {
        let path = self.active_path();
        self.active
            .write_all(&self.pending)
            .map_err(Error::io(&path))?;
        self.active_len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Makes the records written since the last publish visible to readers.
    fn publish(&mut self) {
        let mut metas = self.metas.write().expect("segment metadata lock");
        let meta = metas.last_mut().expect("a segment");
        for (position, offset) in self.pending_offsets.drain(..).enumerate() {
            meta.add_record(self.pending_first_index + position as u64, offset);
        }
        meta.len = self.active_len;
        self.pending_first_index = self.next_index;
    }

    /// Closes the active segment durably and starts a new one.
    fn roll(&mut self) -> Result<(), Error> {
        self.write_pending()?;
        let old_path = self.active_path();
        self.active.sync_data().map_err(Error::io(&old_path))?;
        self.publish();
        let path = self.dir.join(segment_name(self.next_index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        sync_dir(&self.dir)?;
        self.active = file;
        self.active_len = 0;
        self.metas
            .write()
            .expect("segment metadata lock")
            .push(SegmentMeta::new(self.next_index, path));
        Ok(())
    }
}

/// Reads synced records of a [`SegmentLog`] while it is being written.
#[derive(Clone)]
pub struct LogReader {
    metas: Arc<RwLock<Vec<SegmentMeta>>>,
}

impl LogReader {
    /// Opens a log for reading only, checking every record; any damage, a torn tail
    /// included, is an error. Used by verification, which never repairs.
    pub fn open(dir: &Path) -> Result<LogReader, Error> {
        let mut metas = Vec::new();
        let mut next_index = 1;
        for (first_index, path) in list_segments(dir)? {
            if first_index != next_index {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at record {first_index}, expected {next_index}"
                    ),
                });
            }
            let data = std::fs::read(&path).map_err(Error::io(&path))?;
            let mut meta = SegmentMeta::new(first_index, path.clone());
            meta.len = data.len() as u64;
            let mut offset = 0;
            while offset < data.len() {
                let payload = parse_frame(&data[offset..]).map_err(|reason| Error::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    reason,
                })?;
                meta.add_record(next_index, offset as u64);
                next_index += 1;
                offset += FRAME_HEADER_BYTES + payload.len();
            }
            metas.push(meta);
        }
        Ok(LogReader {
            metas: Arc::new(RwLock::new(metas)),
        })
    }

    /// Number of the last synced record (0 when empty).
    pub fn last_index(&self) -> u64 {
        let metas = self.metas.read().expect("segment metadata lock");
        metas
            .last()
            .map_or(0, |meta| meta.first_index + meta.count - 1)
    }

    /// Calls `visit` with every synced record from `from_index` on, until it breaks.
    pub fn scan(
        &self,
        from_index: u64,
        mut visit: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let from_index = from_index.max(1);
        let segments: Vec<(u64, PathBuf, u64, u64, u64)> = {
            let metas = self.metas.read().expect("segment metadata lock");
            metas
                .iter()
                .filter(|meta| meta.count > 0 && meta.first_index + meta.count > from_index)
                .map(|meta| {
                    let (start_index, start_offset) = meta
                        .sparse
                        .iter()
                        .rev()
                        .find(|(index, _)| *index <= from_index)
                        .copied()
                        .unwrap_or((meta.first_index, 0));
                    (
                        start_index,
                        meta.path.clone(),
                        start_offset,
                        meta.len,
                        meta.first_index + meta.count,
                    )
                })
                .collect()
        };
        let mut payload = Vec::new();
        for (mut index, path, offset, len, end_index) in segments {
            let mut file = File::open(&path).map_err(Error::io(&path))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(Error::io(&path))?;
            let mut reader = BufReader::with_capacity(64 << 10, file.take(len - offset));
            let mut position = offset;
            while index < end_index {
                let mut header = [0u8; FRAME_HEADER_BYTES];
                reader.read_exact(&mut header).map_err(Error::io(&path))?;
                let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
                if length > RECORD_BYTES_MAX {
                    return Err(Error::Corrupt {
                        path,
                        offset: position,
                        reason: format!("record length {length} is too large"),
                    });
                }
                payload.resize(length, 0);
                reader.read_exact(&mut payload).map_err(Error::io(&path))?;
                if crc32fast::hash(&payload) != crc {
                    return Err(Error::Corrupt {
                        path,
                        offset: position,
                        reason: "checksum mismatch".into(),
                    });
                }
                if index >= from_index && visit(index, &payload).is_break() {
                    return Ok(());
                }
                position += (FRAME_HEADER_BYTES + length) as u64;
                index += 1;
            }
        }
        Ok(())
    }
}

/// Lists `(first index, path)` of the segment files in `dir`, in order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            files.push((first, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.seg")
}

/// Where the frame at the start of `bytes` would end, if its header is complete.
fn frame_end(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..FRAME_HEADER_BYTES)?;
    Some(
        FRAME_HEADER_BYTES + u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize,
    )
}

/// Parses the frame at the start of `bytes` and returns its payload.
pub(crate) fn parse_frame(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(format!(
            "{} bytes where a record header needs {FRAME_HEADER_BYTES}",
            bytes.len()
        ));
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if length == 0 || length > RECORD_BYTES_MAX {
        return Err(format!("record length {length} is out of range"));
    }
    let Some(payload) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length) else {
        return Err(format!(
            "record of {length} bytes runs past the end of the file"
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".to_string());
    }
    Ok(payload)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
