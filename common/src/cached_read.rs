//! Reading a local file's next bytes on the calling thread when they are
//! already in memory, so that a download from a folder does not make a trip
//! to the blocking pool for every chunk.
//!
//! A read the page cache answers is a copy at memory speed; the trip to
//! tokio's blocking pool around it (a hand-off, a thread woken, a task woken
//! back) costs more than the copy once hundreds of downloads run at once.
//! nginx reads files on its event loop for the same reason. A read that
//! would wait for a disk must not run on an async worker, so:
//!
//! - on tmpfs and ramfs, where the file is memory, every read is made here;
//! - elsewhere a read asks the kernel not to wait (`preadv2` with
//!   `RWF_NOWAIT`): it returns what the page cache holds from the current
//!   position, or `EAGAIN` when the first page is not there, and then the
//!   read goes to the blocking pool;
//! - a file system that does not take `RWF_NOWAIT` is read on the blocking
//!   pool, as before.
//!
//! The fourth use of `unsafe` in ferry (beside `activation`, `heap` and
//! `tcp_rtt`): neither the standard library nor tokio offers `preadv2` or
//! `fstatfs`, so both are called here through libc, on a descriptor
//! borrowed from an open file, into a buffer this module owns.
#![allow(unsafe_code)]

use bytes::Bytes;
use std::fs::File;

/// How a file's reads may be made off the blocking pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inline {
    /// Always: the file system is memory (tmpfs, ramfs).
    Always,
    /// When the page cache holds the bytes (`RWF_NOWAIT`).
    IfCached,
    /// Never: every read goes to the blocking pool.
    Never,
}

/// How `f`'s reads may be made, from the file system it lives on.
#[cfg(target_os = "linux")]
pub fn mode(f: &File) -> Inline {
    use std::os::fd::AsRawFd as _;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: `statfs` is plain old data for which all zeroes is a valid
    // value; `fstatfs` writes one into it; the descriptor is borrowed from
    // a file that stays open for the duration of the call.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        let rc = libc::fstatfs(f.as_raw_fd(), &mut st);
        (rc, st)
    };
    if rc != 0 {
        return Inline::Never;
    }
    // `f_type` and the constants are of a width that differs by target.
    #[allow(clippy::unnecessary_cast)]
    let (kind, tmpfs) = (st.f_type as i64, libc::TMPFS_MAGIC as i64);
    if kind == tmpfs || kind == RAMFS_MAGIC {
        Inline::Always
    } else {
        Inline::IfCached
    }
}

/// How `f`'s reads may be made: off Linux, always on the blocking pool.
#[cfg(not(target_os = "linux"))]
pub fn mode(_: &File) -> Inline {
    Inline::Never
}

/// Up to `want` bytes from where `f` stands, read on this thread if `mode`
/// allows it and they are in memory (possibly fewer than `want`, not only
/// at the end of the file); `None` when they must be read on the blocking
/// pool. A file system found not to take `RWF_NOWAIT` turns `mode` to
/// [`Inline::Never`].
#[cfg(target_os = "linux")]
pub fn try_read(f: &File, want: usize, mode: &mut Inline) -> Option<std::io::Result<Bytes>> {
    let flags = match *mode {
        Inline::Never => return None,
        Inline::Always => 0,
        Inline::IfCached => libc::RWF_NOWAIT,
    };
    match read_at_cursor(f, want, flags) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            *mode = Inline::Never;
            None
        }
        other => Some(other),
    }
}

/// Off Linux every read goes to the blocking pool.
#[cfg(not(target_os = "linux"))]
pub fn try_read(_: &File, _: usize, _: &mut Inline) -> Option<std::io::Result<Bytes>> {
    None
}

/// One `preadv2` of up to `want` bytes at `f`'s position (which it moves
/// on), into a buffer of that size not zero-filled first.
#[cfg(target_os = "linux")]
fn read_at_cursor(f: &File, want: usize, flags: libc::c_int) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd as _;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    loop {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: the vector describes `want` bytes of writable capacity
        // that it owns; `preadv2` writes at most that many into it (offset
        // -1: at the file's position, which it moves on); the descriptor
        // is borrowed from a file that stays open for the duration of the
        // call.
        let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, -1, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: `preadv2` initialised the first `n` bytes, and `n` is at
        // most `want`, the capacity.
        unsafe { buf.set_len(n as usize) };
        return Ok(Bytes::from(buf));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Seek as _, Write as _};

    fn file_in(dir: &std::path::Path, len: usize) -> (File, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let path = dir.join("f.bin");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        (File::open(&path).unwrap(), data)
    }

    /// Reads whatever `try_read` gives until the end, the blocking pool's
    /// part done with a plain read.
    fn read_all(f: &mut File, mode: &mut Inline, want: usize) -> (Vec<u8>, usize) {
        use std::io::Read as _;
        let (mut out, mut inline) = (Vec::new(), 0);
        loop {
            let chunk = match try_read(f, want, mode) {
                Some(r) => {
                    inline += 1;
                    r.unwrap().to_vec()
                }
                None => {
                    let mut b = vec![0; want];
                    let n = f.read(&mut b).unwrap();
                    b.truncate(n);
                    b
                }
            };
            if chunk.is_empty() {
                return (out, inline);
            }
            out.extend_from_slice(&chunk);
        }
    }

    #[test]
    fn a_cached_file_reads_whole_and_in_order_on_this_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, data) = file_in(dir.path(), 300_000);
        let mut mode = mode(&f);
        assert_ne!(mode, Inline::Never, "a Linux file system");
        f.seek(std::io::SeekFrom::Start(1000)).unwrap();
        let (got, inline) = read_all(&mut f, &mut mode, 64 << 10);
        assert_eq!(got, data[1000..]);
        // Just written, so in the page cache (or on tmpfs): read here, unless
        // the file system turned out not to take RWF_NOWAIT.
        if mode != Inline::Never {
            assert!(inline >= 5, "{inline} reads made on this thread");
        }
    }

    #[test]
    fn tmpfs_is_read_always_and_never_means_the_blocking_pool() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let (f, _) = file_in(dir.path(), 10);
        assert_eq!(mode(&f), Inline::Always);
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = file_in(dir.path(), 10);
        assert!(try_read(&f, 10, &mut Inline::Never).is_none());
    }
}
