//! Sandbox output logs, bounded like Docker's json-file `max-size` /
//! `max-file`: a small pump process (this binary, `dataplane log-pump`)
//! reads the sandbox's stdout and stderr from a pipe and writes
//! `output.log`, rotating it to `output.log.1`, `.2`, … when it would pass
//! the size limit. The pump is its own session, so it outlives a daemon
//! restart with the sandbox, and it ends when the sandbox's last writer
//! closes the pipe. When the disk is full it drops output instead of
//! blocking the sandbox.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How much output a sandbox keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Largest size of one file, in bytes.
    pub max_size: u64,
    /// Files kept: the live one and `max_files - 1` rotated ones.
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_size: 10 << 20, max_files: 3 }
    }
}

/// Parses a size as Docker's log options take it: `10m`, `100k`, `1g`, or bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |why: &str| Error::invalid("log size", s, why);
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad("use a number with an optional k, m or g suffix"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| bad("too large"))?;
    if bytes < 1024 {
        return Err(bad("at least 1k"));
    }
    Ok(bytes)
}

impl LogLimits {
    /// Applies `--log-opt KEY=VALUE` entries (max-size, max-file) to these defaults.
    pub fn with_options(mut self, opts: &[String]) -> Result<Self> {
        for o in opts {
            match o.split_once('=') {
                Some(("max-size", v)) => self.max_size = parse_size(v)?,
                Some(("max-file", v)) => {
                    self.max_files = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| Error::invalid("log option", o, "max-file must be 1 to 100"))?;
                }
                _ => {
                    return Err(Error::invalid(
                        "log option",
                        o,
                        "the options are max-size=SIZE and max-file=N",
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// `output.log`, then `output.log.1`, …: the name of rotated file `n`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        path.to_path_buf()
    } else {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }
}

/// Every log file of `path`, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    // Bounded: at most 100 files are kept (max-file).
    for n in (1..=100).rev() {
        let p = rotated(path, n);
        if p.exists() {
            out.push(p);
        }
    }
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Width of the time each line starts with in the files:
/// `2026-12-01T10:00:00.123456789Z ` (RFC 3339, nanoseconds, UTC, a space).
const STAMP: usize = 31;

fn stamp_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ ").to_string()
}

/// One line of a file: its time (nanoseconds since the epoch; None for
/// output written before lines were stamped, or cut by a rotation) and its text.
fn parse_line(line: &[u8]) -> (Option<i64>, &[u8]) {
    if line.len() >= STAMP && line[STAMP - 1] == b' ' {
        let ts = std::str::from_utf8(&line[..STAMP - 1])
            .ok()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|d| d.timestamp_nanos_opt());
        if let Some(ts) = ts {
            return (Some(ts), &line[STAMP..]);
        }
    }
    (None, line)
}

/// Which lines `logs` shows, and how.
#[derive(Clone, Debug, Default)]
pub struct Select {
    /// Each line with its time first (RFC 3339).
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines written at or after / before these times (ns since the epoch).
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Select {
    fn keeps(&self, ts: Option<i64>) -> bool {
        match ts {
            None => true,
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
        }
    }

    fn render(&self, line: &[u8], out: &mut Vec<u8>) {
        let (ts, text) = parse_line(line);
        if self.timestamps && ts.is_some() {
            out.extend_from_slice(&line[..STAMP]);
        }
        out.extend_from_slice(text);
    }
}

/// Splits `buf` into whole lines (newline kept) and the unfinished rest.
fn lines(buf: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            out.push(&buf[start..=i]);
            start = i + 1;
        }
    }
    (out, &buf[start..])
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.len()))
}

fn read_range(path: &Path, from: u64, to: Option<u64>) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = match to {
        Some(end) => f.take(end.saturating_sub(from)).read_to_end(&mut buf),
        None => f.read_to_end(&mut buf),
    };
    buf
}

/// Reads on where a [`snapshot`] ended, for `logs -f`.
#[derive(Debug, Default)]
pub struct Follower {
    select: Select,
    /// The live file when last read, and how far.
    ino: u64,
    offset: u64,
    /// A line begun but not yet ended.
    partial: Vec<u8>,
}

impl Follower {
    /// What was written since the last read, whole lines only. Follows a
    /// rotation: the rest of the file it was reading (now `.1`), then the new one.
    pub fn poll(&mut self, path: &Path) -> String {
        let Some((ino, len)) = inode(path) else { return String::new() };
        let mut new = Vec::new();
        if ino != self.ino {
            if let Some(old) = files(path).into_iter().find(|p| inode(p).is_some_and(|(i, _)| i == self.ino))
            {
                new.extend(read_range(&old, self.offset, None));
            }
            self.ino = ino;
            self.offset = 0;
        }
        new.extend(read_range(path, self.offset, Some(len)));
        self.offset = len.max(self.offset);
        self.partial.extend_from_slice(&new);
        let (whole, rest) = lines(&self.partial);
        let mut out = Vec::new();
        for l in whole {
            if self.select.keeps(parse_line(l).0) {
                self.select.render(l, &mut out);
            }
        }
        self.partial = rest.to_vec();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The unfinished last line, once nothing more will come.
    pub fn rest(&mut self) -> String {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            self.select.render(&std::mem::take(&mut self.partial), &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The kept output `select` chooses, oldest first, and a follower that
/// reads on from there (`follow`: an unfinished last line is left to it;
/// else it is output, a line like the others).
pub fn snapshot(path: &Path, select: &Select, follow: bool) -> (String, Follower) {
    // The live file's length first: what is written after is the follower's.
    let (ino, len) = inode(path).unwrap_or((0, 0));
    let mut buf = Vec::new();
    for f in files(path) {
        if f == path {
            buf.extend(read_range(&f, 0, Some(len)));
        } else {
            buf.extend(read_range(&f, 0, None));
        }
    }
    let (mut whole, mut rest) = lines(&buf);
    if !follow && !rest.is_empty() {
        whole.push(rest);
        rest = &[];
    }
    let kept: Vec<&[u8]> = whole.into_iter().filter(|l| select.keeps(parse_line(l).0)).collect();
    let from = select.tail.map_or(0, |n| kept.len().saturating_sub(n));
    let mut out = Vec::new();
    for l in &kept[from..] {
        select.render(l, &mut out);
    }
    let follower = Follower { select: select.clone(), ino, offset: len, partial: rest.to_vec() };
    (String::from_utf8_lossy(&out).into_owned(), follower)
}

/// The whole kept output, oldest first, without the times (an unfinished
/// last line included).
pub fn read_all(path: &Path) -> String {
    snapshot(path, &Select::default(), false).0
}

/// Moves `output.log` to `.1` (and `.1` to `.2`, …), dropping what falls past `max_files`.
fn rotate(path: &Path, max_files: u32) {
    let _ = std::fs::remove_file(rotated(path, max_files.saturating_sub(1).max(1)));
    for n in (1..max_files.saturating_sub(1)).rev() {
        let _ = std::fs::rename(rotated(path, n), rotated(path, n + 1));
    }
    if max_files > 1 {
        let _ = std::fs::rename(path, rotated(path, 1));
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Writes a sandbox's output into its log files: each line stamped with
/// the time it began, rotated at the size limit, dropped (never blocking)
/// when the disk is full.
pub struct LogWriter {
    path: PathBuf,
    limits: LogLimits,
    out: std::fs::File,
    size: u64,
    at_line_start: bool,
    stamped: Vec<u8>,
}

impl LogWriter {
    pub fn open(path: &Path, limits: LogLimits) -> std::io::Result<Self> {
        let out = std::fs::File::options().create(true).append(true).open(path)?;
        let size = out.metadata().map(|m| m.len()).unwrap_or(0);
        // An earlier run's unfinished line goes on (as on a terminal).
        let at_line_start = size == 0 || read_range(path, size - 1, None).last() == Some(&b'\n');
        Ok(LogWriter { path: path.to_path_buf(), limits, out, size, at_line_start, stamped: Vec::new() })
    }

    /// Appends `data`; Ok(false) once the sandbox's directory is gone (removed: nothing to keep).
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<bool> {
        self.stamped.clear();
        let stamp = stamp_now();
        for piece in data.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                self.stamped.extend_from_slice(stamp.as_bytes());
            }
            self.stamped.extend_from_slice(piece);
            self.at_line_start = piece.last() == Some(&b'\n');
        }
        let mut done = 0;
        while done < self.stamped.len() {
            if self.size >= self.limits.max_size {
                rotate(&self.path, self.limits.max_files);
                self.out = match std::fs::File::options().create(true).append(true).open(&self.path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                };
                self.size = 0;
            }
            let room = (self.limits.max_size - self.size).min((self.stamped.len() - done) as u64) as usize;
            match self.out.write_all(&self.stamped[done..done + room]) {
                Ok(()) => self.size += room as u64,
                // A full disk loses output, never blocks or kills the sandbox.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {}
                Err(e) => return Err(e),
            }
            done += room;
        }
        Ok(true)
    }
}

/// The pump: copies `input` to `path` within `limits` until end of input.
pub fn pump(mut input: impl Read, path: &Path, limits: LogLimits) -> std::io::Result<()> {
    let mut w = LogWriter::open(path, limits)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A pseudo-terminal whose last user closed it.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !w.write(&buf[..n])? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_options_parse_like_dockers() {
        assert_eq!(parse_size("10m").expect("10m"), 10 << 20);
        assert_eq!(parse_size("100k").expect("100k"), 100 << 10);
        assert_eq!(parse_size("2048").expect("bytes"), 2048);
        assert!(parse_size("ten").is_err() && parse_size("10").is_err());
        let l =
            LogLimits::default().with_options(&["max-size=1m".into(), "max-file=2".into()]).expect("opts");
        assert_eq!(l, LogLimits { max_size: 1 << 20, max_files: 2 });
        assert!(LogLimits::default().with_options(&["max-file=0".into()]).is_err());
        assert!(LogLimits::default().with_options(&["mode=non-blocking".into()]).is_err());
    }

    #[test]
    fn the_pump_rotates_and_keeps_at_most_max_files() {
        let dir = std::env::temp_dir().join(format!("dp-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("output.log");
        let line = "0123456789abcdef".repeat(4) + "\n"; // 65 bytes
        let input = line.repeat(1000); // 65,000 bytes
        pump(input.as_bytes(), &path, LogLimits { max_size: 4096, max_files: 3 }).expect("pump");
        let kept = files(&path);
        assert_eq!(kept.len(), 3, "{kept:?}");
        for f in &kept {
            assert!(std::fs::metadata(f).expect("meta").len() <= 4096);
        }
        let all = read_all(&path);
        assert!(all.len() <= 3 * 4096 && all.len() > 4096, "{}", all.len());
        // A rotation may cut a line: what is kept is the input's end, in order, with at most that line short.
        let whole: String = all.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert!(input.ends_with(&whole), "the newest output is kept, in order");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_are_stamped_and_chosen_by_time_and_count() {
        let dir = std::env::temp_dir().join(format!("dp-logs-ts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("output.log");
        let before = chrono::Utc::now().timestamp_nanos_opt().expect("now");
        pump("one\ntwo\nthr".as_bytes(), &path, LogLimits::default()).expect("pump");
        let after = chrono::Utc::now().timestamp_nanos_opt().expect("now");
        // Plain: the text as written; the unfinished line too.
        assert_eq!(read_all(&path), "one\ntwo\nthr");
        let (text, _) = snapshot(&path, &Select { timestamps: true, ..Default::default() }, false);
        let first = text.lines().next().expect("a line");
        let (ts, rest) = parse_line(first.as_bytes());
        assert_eq!(rest, b"one");
        assert!(ts.is_some_and(|t| (before..=after).contains(&t)), "{first}");
        assert_eq!(snapshot(&path, &Select { tail: Some(1), ..Default::default() }, false).0, "thr");
        assert_eq!(snapshot(&path, &Select { tail: Some(2), ..Default::default() }, true).0, "one\ntwo\n");
        assert_eq!(snapshot(&path, &Select { since: Some(after + 1), ..Default::default() }, false).0, "");
        assert_eq!(snapshot(&path, &Select { until: Some(before), ..Default::default() }, false).0, "");
        // Following: the unfinished line ends, more comes, a rotation happens.
        let (_, mut f) = snapshot(&path, &Select::default(), true);
        pump("ee\nfour\n".as_bytes(), &path, LogLimits::default()).expect("pump");
        assert_eq!(f.poll(&path), "three\nfour\n");
        rotate(&path, 3);
        pump("five\nsi".as_bytes(), &path, LogLimits::default()).expect("pump");
        assert_eq!(f.poll(&path), "five\n");
        assert_eq!(f.rest(), "si");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
