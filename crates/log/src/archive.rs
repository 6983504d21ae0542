//! The task archive (`archive/tasks/`): finished task trees that left the kernel's
//! live state by the retention rule, as they last stood, so that they stay readable.
//!
//! Written from the log: the tasks come out of [`colony_kernel::Applied::retired`]
//! when the node decides (after the group's records are durable, before any snapshot
//! that no longer holds them) and when it replays the command log at start, so a
//! crash between the two only writes a tree twice. Readers take the last copy.
//!
//! One JSON line per task (the kernel's [`Task`], its `address` first), appended to a
//! shard file per thousand root numbers: `0.7.1.00042.3` (a subtask of root 42) is in
//! `0.7.1.000000.jsonl`, root 12 345's tree in `0.7.1.000012.jsonl`. A lookup reads
//! one shard and parses only the lines of the address it wants. Plain text: `grep`,
//! `jq` and a backup tool read it as well.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use colony_kernel::tasks::Task;

use crate::segment::sync_dir;
use crate::Error;

/// Root numbers per shard file.
pub const ROOTS_PER_SHARD: u64 = 1_000;
/// Longest archived line read back (a task holds at most 64 KiB each of description,
/// checkpoint and result, plus its history): longer lines are skipped as damaged.
pub const ARCHIVE_LINE_BYTES_MAX: usize = 4 << 20;

/// Where finished task trees are kept once they leave the live state.
#[derive(Clone, Debug)]
pub struct TaskArchive {
    dir: PathBuf,
}

/// The shard file name of an address: `<queue>.<root number / 1000, 6 digits>.jsonl`.
fn shard_of(address: &str) -> String {
    let parts: Vec<&str> = address.splitn(5, '.').collect();
    match (
        parts.get(..3),
        parts.get(3).and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some(queue), Some(number)) => {
            format!("{}.{:06}.jsonl", queue.join("."), number / ROOTS_PER_SHARD)
        }
        _ => "other.jsonl".to_string(),
    }
}

/// Whether the file's last line lacks its newline.
fn torn(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, length - 1)?;
    Ok(last[0] != b'\n')
}

/// The line's task address, read from its start without parsing the rest.
fn line_address(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(br#"{"address":""#)?;
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

impl TaskArchive {
    /// The archive of the data directory `data` (`data/archive/tasks`); created on
    /// the first write.
    pub fn new(data: &Path) -> TaskArchive {
        TaskArchive {
            dir: data.join("archive").join("tasks"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends tasks and makes them durable (one sync per shard written).
    pub fn write(&self, tasks: &[Task]) -> Result<(), Error> {
        if tasks.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let mut shards: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for task in tasks {
            let lines = shards.entry(shard_of(&task.address)).or_default();
            serde_json::to_writer(&mut *lines, task).expect("tasks serialize");
            lines.push(b'\n');
        }
        let mut created = false;
        for (name, lines) in shards {
            let path = self.dir.join(name);
            created |= !path.exists();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(Error::io(&path))?;
            if torn(&file).map_err(Error::io(&path))? {
                // A crash cut the last line: end it, so that it stays one damaged
                // line instead of swallowing the first new one.
                file.write_all(b"\n").map_err(Error::io(&path))?;
            }
            file.write_all(&lines).map_err(Error::io(&path))?;
            file.sync_data().map_err(Error::io(&path))?;
        }
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The archived task at `address`, if it was archived.
    pub fn get(&self, address: &str) -> Result<Option<Task>, Error> {
        let mut found = None;
        self.scan(
            address,
            |line_address| line_address == address,
            |task| found = Some(task),
        )?;
        Ok(found)
    }

    /// The archived task at `address` and its direct subtasks (each, like the task,
    /// the last copy written), reading one line at a time: what a task's view needs,
    /// in memory bounded by one task and its children, whatever the tree's size.
    pub fn get_with_children(&self, address: &str) -> Result<Option<(Task, Vec<Task>)>, Error> {
        let below = format!("{address}.");
        let direct = |candidate: &str| {
            candidate
                .strip_prefix(&below)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
        };
        let mut found = None;
        let mut children = std::collections::BTreeMap::new();
        self.scan(
            address,
            |candidate| candidate == address || direct(candidate),
            |mut task| {
                if task.address == address {
                    found = Some(task);
                } else {
                    // A child is shown by its address, title and status only.
                    task.description.clear();
                    task.checkpoint = None;
                    task.result = None;
                    task.history.clear();
                    task.attempts.clear();
                    children.insert(task.address.clone(), task);
                }
            },
        )?;
        Ok(found.map(|task| (task, children.into_values().collect())))
    }

    /// Reads the shard of `address`, handing every task whose address `wanted` to
    /// `found`, oldest first (a later copy replaces an earlier one). A line that does
    /// not parse (a torn tail after a crash) is skipped.
    fn scan(
        &self,
        address: &str,
        wanted: impl Fn(&str) -> bool,
        mut found: impl FnMut(Task),
    ) -> Result<(), Error> {
        let path = self.dir.join(shard_of(address));
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(Error::io(&path)(error)),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = std::io::Read::take(&mut reader, ARCHIVE_LINE_BYTES_MAX as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(Error::io(&path))?;
            if read == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') {
                if line.len() > ARCHIVE_LINE_BYTES_MAX {
                    // Skip the rest of an overlong line.
                    let mut rest = Vec::new();
                    reader
                        .read_until(b'\n', &mut rest)
                        .map_err(Error::io(&path))?;
                }
                continue;
            }
            if !line_address(&line).is_some_and(&wanted) {
                continue;
            }
            if let Ok(task) = serde_json::from_slice::<Task>(&line) {
                found(task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_group_a_thousand_roots_with_their_subtasks() {
        assert_eq!(shard_of("0.7.1.00042"), "0.7.1.000000.jsonl");
        assert_eq!(shard_of("0.7.1.00042.3.1"), "0.7.1.000000.jsonl");
        assert_eq!(shard_of("0.7.1.12345"), "0.7.1.000012.jsonl");
        assert_eq!(shard_of("0.7.1.1234567.2"), "0.7.1.001234.jsonl");
        assert_eq!(shard_of("0.7"), "other.jsonl");
    }

    fn task(address: &str, title: &str) -> Task {
        let json = format!(
            r#"{{"address":"{address}","parent":null,"children":[],"next_child":0,"title":"{title}","description":"","priority":"normal","capabilities":[],"depends_on":[],"budget":null,"max_attempts":3,"attempt_timeout_ms":1000,"failures":0,"status":"completed","attempts":[],"checkpoint":null,"result":null,"history":[],"created_at_ms":1,"created_by":"1.1","lease":null,"not_before_ms":0,"ready_since_ms":1,"dead_reasons":[],"on_child_death":"fail"}}"#
        );
        let mut task: Task = serde_json::from_str(&json).expect("a task");
        if let Some((parent, _)) = address.rsplit_once('.').filter(|_| address.len() > 11) {
            task.parent = Some(colony_kernel::TaskAddress::parse(parent).expect("an address"));
        }
        task
    }

    #[test]
    fn archived_tasks_read_back_the_last_copy_wins_and_a_torn_tail_costs_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let archive = TaskArchive::new(dir.path());
        assert_eq!(archive.get("0.7.1.00001").unwrap(), None, "nothing yet");
        archive
            .write(&[
                task("0.7.1.00001", "root"),
                task("0.7.1.00001.1", "child"),
                task("0.7.1.00010", "other"),
                task("0.7.1.01001", "next shard"),
            ])
            .unwrap();
        assert_eq!(
            archive.get("0.7.1.00001.1").unwrap().unwrap().title,
            "child"
        );
        assert_eq!(
            archive.get("0.7.1.01001").unwrap().unwrap().title,
            "next shard"
        );
        archive
            .write(&[task("0.7.1.00001.1.4", "grandchild")])
            .unwrap();
        let (root, children) = archive.get_with_children("0.7.1.00001").unwrap().unwrap();
        assert_eq!(root.title, "root");
        let children: Vec<&str> = children.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(
            children,
            vec!["0.7.1.00001.1"],
            "direct subtasks only: not 0.7.1.00010, not the grandchild"
        );
        assert_eq!(archive.get_with_children("0.7.1.00002").unwrap(), None);
        // A replay writes a tree again: the last copy is read.
        archive.write(&[task("0.7.1.00001", "root again")]).unwrap();
        assert_eq!(
            archive.get("0.7.1.00001").unwrap().unwrap().title,
            "root again"
        );
        // A crash tears the shard's last line; the next write still reads back.
        let shard = archive.dir().join("0.7.1.000000.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&shard)
            .unwrap();
        file.write_all(br#"{"address":"0.7.1.00002","tit"#).unwrap();
        archive
            .write(&[task("0.7.1.00003", "after the tear")])
            .unwrap();
        assert_eq!(archive.get("0.7.1.00002").unwrap(), None);
        assert_eq!(
            archive.get("0.7.1.00003").unwrap().unwrap().title,
            "after the tear"
        );
    }

    #[test]
    fn a_line_names_its_address_first() {
        assert_eq!(
            line_address(br#"{"address":"0.7.1.00001","parent":null}"#),
            Some("0.7.1.00001")
        );
        assert_eq!(line_address(b"garbage"), None);
    }
}
