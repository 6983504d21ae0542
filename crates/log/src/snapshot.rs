//! Snapshots of the kernel state, so that a restart replays only the log's tail.
//!
//! File `snapshots/<seq:020>.snap`: `b"COLSNAP1"`, the command sequence number (u64 LE),
//! the payload length (u64 LE), the payload's CRC-32 (u32 LE), then the payload:
//! the postcard encoding of [`colony_kernel::State`]. Written to a temporary file,
//! synced, then renamed, so a snapshot is either whole or absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use colony_kernel::State;

use crate::segment::sync_dir;
use crate::Error;

const MAGIC: &[u8; 8] = b"COLSNAP1";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
/// Snapshots kept; older ones are deleted after a new one is written.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Encodes a state for [`write_snapshot`]. Cheap enough to run between batches.
pub fn encode_state(state: &State) -> Vec<u8> {
    postcard::to_stdvec(state).expect("kernel state serializes")
}

/// Writes an encoded state durably and deletes snapshots beyond [`SNAPSHOTS_KEPT`].
pub fn write_snapshot(dir: &Path, seq: u64, payload: &[u8]) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let path = dir.join(format!("{seq:020}.snap"));
    let temporary = dir.join(format!("{seq:020}.snap.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(Error::io(&temporary))?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    file.write_all(&header)
        .and_then(|()| file.write_all(payload))
        .map_err(Error::io(&temporary))?;
    file.sync_all().map_err(Error::io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(Error::io(&path))?;
    sync_dir(dir)?;
    let mut existing = list(dir)?;
    while existing.len() > SNAPSHOTS_KEPT {
        let (_, old) = existing.remove(0);
        std::fs::remove_file(&old).map_err(Error::io(&old))?;
    }
    Ok(path)
}

/// Loads the newest snapshot that is whole, skipping (with a warning) any that is not.
pub fn load_latest(dir: &Path) -> Result<Option<(State, PathBuf)>, Error> {
    if !dir.exists() {
        return Ok(None);
    }
    for (seq, path) in list(dir)?.into_iter().rev() {
        match read(&path, seq) {
            Ok(state) => return Ok(Some((state, path))),
            Err(reason) => {
                tracing::warn!(file = %path.display(), "skipping a damaged snapshot: {reason}")
            }
        }
    }
    Ok(None)
}

fn read(path: &Path, seq: u64) -> Result<State, String> {
    let data = std::fs::read(path).map_err(|error| error.to_string())?;
    if data.len() < HEADER_BYTES || &data[..8] != MAGIC {
        return Err("not a Colony snapshot".into());
    }
    let stored_seq = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let length = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(data[24..28].try_into().expect("4 bytes"));
    let payload = &data[HEADER_BYTES..];
    if stored_seq != seq || payload.len() != length || crc32fast::hash(payload) != crc {
        return Err("length, sequence number or checksum does not match".into());
    }
    let state: State = postcard::from_bytes(payload).map_err(|error| error.to_string())?;
    if state.last_seq != seq {
        return Err(format!(
            "state is at command {} but the file says {seq}",
            state.last_seq
        ));
    }
    Ok(state)
}

/// The sequence number of the oldest snapshot kept, if any: the log before it is not
/// needed for a restart.
pub fn oldest_kept(dir: &Path) -> Result<Option<u64>, Error> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(list(dir)?.first().map(|(seq, _)| *seq))
}

fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        if let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|s| s.parse().ok())
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}
