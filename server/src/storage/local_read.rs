//! Reading a local object: memory-mapped windows, checked before they are handed out.
//!
//! A mapped page that cannot be read (an I/O error of the disk, or a file that shrank
//! under the reader) raises SIGBUS when it is touched — it would kill the process, not
//! fail one request. So a window is only handed out when the file still holds all of it
//! and every page is resident after the mapping call read it in; otherwise the window is
//! read with `pread`, which reports the same fault as an error (a 503 for that request).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::StorageError;

/// Pieces a local object is handed to the HTTP layer in.
const READ_CHUNK: u64 = 256 * 1024;

/// Bytes of a local file mapped at once (handed out in `READ_CHUNK` slices).
const MAP_WINDOW: u64 = 1024 * 1024;

/// Bytes `range` of a local file, memory-mapped a `MAP_WINDOW` at a time (page tables
/// filled from the page cache in the same call) and handed out in `READ_CHUNK` slices; a
/// window is unmapped once its slices have been written, so a transfer holds about one
/// window — no read call, zeroed buffer or blocking task per piece. Stored objects are
/// content-addressed and written once (temporary file, then rename), never modified in
/// place, so a mapping cannot change under a reader. A window that cannot be mapped, or
/// is not wholly readable (`map_window`), is read on the blocking pool instead.
pub(super) fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    let file = Arc::new(file);
    let windows = futures::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(MAP_WINDOW);
            let window = match map_window(&file, pos, want) {
                Some(map) => Bytes::from_owner(map),
                None => read_piece(file, pos, want as usize).await?,
            };
            Ok::<_, StorageError>(Some((window, pos + want)))
        }
    });
    windows
        .map_ok(|w| {
            let len = w.len();
            futures::stream::iter(
                (0..len)
                    .step_by(READ_CHUNK as usize)
                    .map(move |off| Ok(w.slice(off..(off + READ_CHUNK as usize).min(len)))),
            )
        })
        .try_flatten()
        .boxed()
}

/// Maps `want` bytes at `pos`, or `None` when the window must be read instead: the file
/// no longer holds the whole window, the mapping failed, or a page could not be read in
/// (`MAP_POPULATE` skips pages it cannot read without an error; touching one later would
/// raise SIGBUS).
fn map_window(file: &std::fs::File, pos: u64, want: u64) -> Option<memmap2::Mmap> {
    if file.metadata().ok()?.len() < pos + want {
        return None;
    }
    // SAFETY: stored objects are never truncated or rewritten in place (see
    // `file_stream`); a file damaged from outside is caught by the length check above
    // and the residency check below before any byte is touched.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(pos)
            .len(want as usize)
            .populate()
            .map(file)
    }
    .ok()?;
    all_resident(&map).then_some(map)
}

/// Whether every page of the mapping is in memory (`mincore`).
fn all_resident(map: &memmap2::Mmap) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return false,
    };
    let addr = map.as_ptr() as usize;
    let start = addr - addr % page;
    let len = addr + map.len() - start;
    let mut pages = vec![0u8; len.div_ceil(page)];
    // SAFETY: [start, start + len) lies within the pages of this live mapping (memmap2
    // maps from the page boundary below the requested offset), and `pages` has one byte
    // per page of that range.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, pages.as_mut_ptr()) };
    rc == 0 && pages.iter().all(|p| p & 1 == 1)
}

async fn read_piece(
    file: Arc<std::fs::File>,
    pos: u64,
    want: usize,
) -> Result<Bytes, StorageError> {
    let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    })
    .await
    .map_err(|e| StorageError::Source(e.to_string()))?
    .map_err(|e| StorageError::Source(format!("reading the stored artifact: {e}")))?;
    Ok(Bytes::from(buf))
}

/// Bytes `range` of a local file, read in `READ_CHUNK` pieces on the blocking pool.
#[cfg(test)]
fn read_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    let file = Arc::new(file);
    futures::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(READ_CHUNK);
            Ok(Some((
                read_piece(file, pos, want as usize).await?,
                pos + want,
            )))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn mapped_and_read_streams_give_the_same_bytes() {
        let data: Vec<u8> = (0..(2 * MAP_WINDOW as usize + 3 * READ_CHUNK as usize + 4097))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let n = data.len() as u64;
        for range in [
            0..n,
            1..n,
            4095..4097,
            1000..(READ_CHUNK + 3),
            (MAP_WINDOW - 10)..(MAP_WINDOW + 10),
            (n - 1)..n,
            5..5,
        ] {
            let collect = |s: BoxStream<'static, Result<Bytes, StorageError>>| async move {
                s.try_collect::<Vec<Bytes>>().await.unwrap().concat()
            };
            let mapped = collect(file_stream(
                std::fs::File::open(f.path()).unwrap(),
                range.clone(),
            ))
            .await;
            let read = collect(read_stream(
                std::fs::File::open(f.path()).unwrap(),
                range.clone(),
            ))
            .await;
            assert_eq!(
                mapped,
                &data[range.start as usize..range.end as usize],
                "{range:?}"
            );
            assert_eq!(read, mapped, "{range:?}");
        }
    }

    /// A stored file that shrank under a reader (damaged from outside) fails the read
    /// with an error; mapped, the pages past its end would have been served as zeros
    /// (the rest of the last page) or killed the test process with SIGBUS.
    #[tokio::test]
    async fn a_file_that_shrank_is_an_error_not_a_crash() {
        let n = 3 * MAP_WINDOW as usize;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![7u8; n]).unwrap();
        let stream = file_stream(std::fs::File::open(f.path()).unwrap(), 0..n as u64);
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(MAP_WINDOW + 10)
            .unwrap();
        let mut stream = stream;
        let mut got = 0usize;
        let err = loop {
            match stream.next().await {
                Some(Ok(b)) => {
                    assert!(b.iter().all(|&x| x == 7));
                    got += b.len();
                }
                Some(Err(e)) => break e,
                None => panic!("the stream ended after {got} bytes without an error"),
            }
        };
        assert!(got <= MAP_WINDOW as usize, "{got}");
        assert!(
            err.to_string().contains("reading the stored artifact"),
            "{err}"
        );
    }

    #[test]
    fn residency_of_a_mapped_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 10_000]).unwrap();
        let file = std::fs::File::open(f.path()).unwrap();
        assert!(map_window(&file, 4097, 5000).is_some());
        assert!(map_window(&file, 4097, 6000).is_none(), "past the end");
    }
}
