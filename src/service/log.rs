//! Logging: human-readable lines on stderr (journald and `docker logs` read
//! it) and in the configured file. The level and the file can change while
//! running (SIGHUP), so both sit behind a handle the drain consults.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use slog::{Drain, Level, Never, OwnedKVList, Record};
use slog_term::{FullFormat, PlainSyncDecorator};

use crate::config::LogLevel;

fn slog_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warning => Level::Warning,
        LogLevel::Error => Level::Error,
    }
}

#[derive(Default)]
struct FileSink {
    path: Option<PathBuf>,
    file: Option<File>,
}

/// Writes to the current log file, if any; a failed write closes it, and the
/// drain says so once on stderr.
#[derive(Clone)]
struct FileWriter(Arc<Mutex<FileSink>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = sink.file.as_mut()
            && let Err(e) = f.write_all(buf)
        {
            let path = sink.path.clone().unwrap_or_default();
            sink.file = None;
            let _ = writeln!(
                io::stderr(),
                "chimaera: cannot write log file {}: {e}; logging to stderr only until the next reload",
                path.display()
            );
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match sink.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

struct Dual {
    max: Arc<AtomicUsize>,
    stderr: FullFormat<PlainSyncDecorator<io::Stderr>>,
    file: FullFormat<PlainSyncDecorator<FileWriter>>,
    has_file: Arc<Mutex<FileSink>>,
}

impl Drain for Dual {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        let max = Level::from_usize(self.max.load(Ordering::Relaxed)).unwrap_or(Level::Info);
        if !record.level().is_at_least(max) {
            return Ok(());
        }
        let _ = self.stderr.log(record, values);
        let file_open = self
            .has_file
            .lock()
            .map(|s| s.file.is_some())
            .unwrap_or(false);
        if file_open {
            let _ = self.file.log(record, values);
        }
        Ok(())
    }
}

/// Changes the running logger.
#[derive(Clone)]
pub struct LogHandle {
    max: Arc<AtomicUsize>,
    sink: Arc<Mutex<FileSink>>,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        self.max
            .store(slog_level(level).as_usize(), Ordering::Relaxed);
    }

    /// (Re)opens the log file at `path` (empty: none), creating its directory.
    /// logrotate moves the old file away and sends SIGHUP; this opens the new
    /// one. The error says why the file cannot be used; logging goes on to
    /// stderr regardless.
    pub fn reopen(&self, path: &str) -> Result<(), String> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        sink.file = None;
        sink.path = None;
        if path.is_empty() {
            return Ok(());
        }
        let p = Path::new(path);
        let opened = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(p));
        match opened {
            Ok(f) => {
                sink.file = Some(f);
                sink.path = Some(p.to_path_buf());
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot write log file {path}: {e}; logging to stderr only"
            )),
        }
    }
}

/// Builds the logger. The returned message, if any, says why the file could
/// not be opened; the caller logs it once.
pub fn init(level: LogLevel, file: &str) -> (slog::Logger, LogHandle, Option<String>) {
    let max = Arc::new(AtomicUsize::new(slog_level(level).as_usize()));
    let sink = Arc::new(Mutex::new(FileSink::default()));
    let handle = LogHandle {
        max: max.clone(),
        sink: sink.clone(),
    };
    let problem = handle.reopen(file).err();
    let drain = Dual {
        max,
        stderr: FullFormat::new(PlainSyncDecorator::new(io::stderr())).build(),
        file: FullFormat::new(PlainSyncDecorator::new(FileWriter(sink.clone()))).build(),
        has_file: sink,
    };
    let logger = slog::Logger::root(drain.fuse(), slog::o!());
    (logger, handle, problem)
}
