//! `flusher_file`: JSON lines appended to a file, rotated by size: when the
//! file would pass `MaxBytes`, it becomes `FILE.1` (older ones shift to
//! `FILE.2` ... `FILE.<MaxFiles>`, the oldest is removed) and a new file
//! starts.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Flusher;
use crate::config::FileSettings;
use crate::records::Record;

pub struct FileFlusher {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl FileFlusher {
    pub fn open(s: &FileSettings) -> Result<Self> {
        let mut f =
            Self { path: s.file_path.clone(), max_bytes: s.max_bytes, max_files: s.max_files, out: None, size: 0 };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.out = Some(BufWriter::new(file));
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        let numbered = |n: u32| -> PathBuf { numbered(&self.path, n) };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(numbered(self.max_files)).ok();
            for n in (1..self.max_files).rev() {
                std::fs::rename(numbered(n), numbered(n + 1)).ok();
            }
            std::fs::rename(&self.path, numbered(1)).with_context(|| format!("rotating {}", self.path.display()))?;
        }
        self.reopen()
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Flusher for FileFlusher {
    fn flush(&mut self, records: &[Record]) -> Result<()> {
        if self.out.is_none() {
            self.reopen()?;
        }
        for r in records {
            let line = r.to_json();
            let len = line.len() as u64 + 1;
            if self.size > 0 && self.size + len > self.max_bytes {
                self.rotate()?;
            }
            let out = self.out.as_mut().expect("opened above");
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .with_context(|| format!("writing {}", self.path.display()))?;
            self.size += len;
        }
        self.out.as_mut().expect("opened above").flush().with_context(|| format!("writing {}", self.path.display()))
    }

    fn close(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let s = FileSettings { file_path: path.clone(), max_bytes: 200, max_files: 2 };
        let mut f = FileFlusher::open(&s).unwrap();
        let mut r = Record::new(crate::records::Kind::Statistics);
        r.push("pad", "x".repeat(40));
        for _ in 0..20 {
            f.flush(std::slice::from_ref(&r)).unwrap();
        }
        f.close().unwrap();
        let line_len = r.to_json().len() as u64 + 1;
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 200 && len % line_len == 0, "{}: {len}", p.display());
        }
        assert!(!numbered(&path, 3).exists());
        let text = std::fs::read_to_string(numbered(&path, 1)).unwrap();
        for line in text.lines() {
            assert_eq!(serde_json::from_str::<serde_json::Value>(line).unwrap()["type"], "statistics");
        }
    }
}
