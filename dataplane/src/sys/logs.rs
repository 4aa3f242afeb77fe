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

/// The whole kept output, oldest first.
pub fn read_all(path: &Path) -> String {
    files(path).iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
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

/// The pump: copies `input` to `path` within `limits` until end of input.
pub fn pump(mut input: impl Read, path: &Path, limits: LogLimits) -> std::io::Result<()> {
    let open = || std::fs::File::options().create(true).append(true).open(path);
    let mut out = open()?;
    let mut size = out.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if size >= limits.max_size {
                rotate(path, limits.max_files);
                out = match open() {
                    Ok(f) => f,
                    // The sandbox's directory is gone (removed): nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                size = 0;
            }
            let room = (limits.max_size - size).min(chunk.len() as u64) as usize;
            match out.write_all(&chunk[..room]) {
                Ok(()) => size += room as u64,
                // A full disk loses output, never blocks or kills the sandbox.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {}
                Err(e) => return Err(e),
            }
            chunk = &chunk[room..];
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
        assert!(all.len() <= 3 * 4096 && input.ends_with(&all), "the newest output is kept, in order");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
