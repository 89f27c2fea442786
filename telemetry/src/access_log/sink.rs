//! Where the writer thread puts batches of lines: stdout, a file (with
//! reopen and size rotation) or any `Write` given by the embedder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub(super) enum Sink {
    Stdout,
    File(FileSink),
    Writer(Box<dyn Write + Send>),
}

impl Sink {
    /// Writes a batch of whole lines. A failed rotation is reported to
    /// `rotation_failed` and does not fail the batch: the lines go to the
    /// current file and the rotation is tried again with the next batch.
    pub(super) fn write(
        &mut self,
        batch: &[u8],
        rotation_failed: &mut dyn FnMut(io::Error),
    ) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            Sink::File(file) => file.write(batch, rotation_failed),
            Sink::Writer(w) => {
                w.write_all(batch)?;
                w.flush()
            }
        }
    }

    /// Closes and opens the file again (after an external rename); nothing
    /// for the other sinks.
    pub(super) fn reopen(&mut self) -> io::Result<()> {
        match self {
            Sink::File(file) => {
                file.file = None;
                file.open()
            }
            Sink::Stdout | Sink::Writer(_) => Ok(()),
        }
    }
}

pub(super) struct FileSink {
    path: PathBuf,
    /// `None` after a failed write or open: opened again for the next batch.
    file: Option<File>,
    /// The file's length, as we believe it.
    size: u64,
    max_size: Option<u64>,
    keep: u32,
}

impl FileSink {
    pub(super) fn open_new(path: &Path, max_size: Option<u64>, keep: u32) -> io::Result<Self> {
        let mut sink = FileSink {
            path: path.to_path_buf(),
            file: None,
            size: 0,
            max_size,
            keep,
        };
        sink.open()?;
        Ok(sink)
    }

    fn open(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn write(
        &mut self,
        batch: &[u8],
        rotation_failed: &mut dyn FnMut(io::Error),
    ) -> io::Result<()> {
        let mut rest = batch;
        let mut may_rotate = self.max_size.is_some();
        while !rest.is_empty() {
            if self.file.is_none() {
                self.open()?;
            }
            let n = match self.max_size {
                Some(max) if may_rotate => {
                    let room = max.saturating_sub(self.size);
                    if rest.len() as u64 <= room {
                        rest.len()
                    } else if let Some(i) = rest[..room as usize].iter().rposition(|&b| b == b'\n')
                    {
                        // `room < rest.len()`, so the cast is lossless.
                        i + 1
                    } else if self.size == 0 {
                        // One line longer than max_size: it gets a file of its own.
                        rest.iter()
                            .position(|&b| b == b'\n')
                            .map_or(rest.len(), |i| i + 1)
                    } else {
                        if let Err(e) = self.rotate() {
                            rotation_failed(e);
                            may_rotate = false;
                        }
                        continue;
                    }
                }
                _ => rest.len(),
            };
            let Some(file) = self.file.as_mut() else {
                continue;
            };
            if let Err(e) = file.write_all(&rest[..n]) {
                self.file = None;
                return Err(e);
            }
            self.size += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// `path` → `path.1` → … → `path.<keep>` (the old `path.<keep>` is
    /// replaced), then a new `path`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            ignore_missing(fs::remove_file(&self.path))?;
        } else {
            for i in (1..self.keep).rev() {
                ignore_missing(fs::rename(self.numbered(i), self.numbered(i + 1)))?;
            }
            ignore_missing(fs::rename(&self.path, self.numbered(1)))?;
        }
        self.open()
    }

    fn numbered(&self, i: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
