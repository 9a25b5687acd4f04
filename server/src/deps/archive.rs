//! Bounded reads of one small file out of a gzipped tarball (an sdist's `PKG-INFO`, an
//! npm tarball's `package.json`), and the bound on a zip's central directory checked
//! before a zip (a wheel, a zip sdist) is opened.
//!
//! Archives come from upstreams and are untrusted. The `tar` crate reads GNU long-name
//! and pax headers whole into memory (a 1 MB `.tar.gz` can carry a 1 GiB header), so
//! this walker reads the ustar headers itself with every quantity bounded: metadata
//! headers (long names, pax records), the wanted file, the number of entries and the
//! decompressed bytes walked. Skipped entries are discarded through a fixed buffer.

use std::io::{self, Read};
use std::path::Path;

/// The bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest GNU long-name / long-link or pax header accepted.
    pub meta_header: u64,
    /// Entries walked before giving up.
    pub entries: u64,
    /// Decompressed bytes walked before giving up (bounds time, not memory).
    pub decompressed: u64,
}

pub const LIMITS: Limits = Limits {
    meta_header: 64 * 1024,
    entries: 100_000,
    decompressed: 2 << 30,
};

const BLOCK: u64 = 512;

/// Entries a zip's central directory may list before it is opened (the `zip` crate keeps
/// every entry of the directory in memory, a few hundred bytes each).
pub const MAX_ZIP_ENTRIES: u64 = 100_000;
/// Bytes the central directory may take.
pub const MAX_ZIP_DIRECTORY: u64 = 32 << 20;

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |v, x| (v << 8) | *x as u64)
}

/// Reads the end-of-central-directory record (and its zip64 form) of the zip at `path`
/// and refuses one whose directory lists more than `MAX_ZIP_ENTRIES` entries or takes
/// more than `MAX_ZIP_DIRECTORY` bytes — without reading the directory itself.
pub fn check_zip_directory(path: &Path) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    // The record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
    let tail_len = len.min(22 + 65535 + 20);
    file.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| e.to_string())?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("not a zip: no end of central directory")?;
    let eocd = &tail[at..at + 22];
    let (mut entries, mut size) = (le(&eocd[10..12]), le(&eocd[12..16]));
    if entries == 0xffff || size == 0xffff_ffff {
        // zip64: the locator sits just before the record and points at the zip64 record
        let locator = at
            .checked_sub(20)
            .map(|l| &tail[l..l + 20])
            .filter(|l| l[..4] == [0x50, 0x4b, 0x06, 0x07])
            .ok_or("not a zip: zip64 sizes without a zip64 locator")?;
        let record_at = le(&locator[8..16]);
        let mut record = [0u8; 56];
        file.seek(SeekFrom::Start(record_at))
            .and_then(|_| file.read_exact(&mut record))
            .map_err(|e| format!("not a zip: zip64 record unreadable: {e}"))?;
        if record[..4] != [0x50, 0x4b, 0x06, 0x06] {
            return Err("not a zip: bad zip64 end of central directory".into());
        }
        entries = le(&record[32..40]);
        size = le(&record[40..48]);
    }
    if entries > MAX_ZIP_ENTRIES {
        return Err(format!(
            "zip central directory lists {entries} entries, over the {MAX_ZIP_ENTRIES}-entry limit"
        ));
    }
    if size > MAX_ZIP_DIRECTORY {
        return Err(format!(
            "zip central directory of {size} bytes is over the {MAX_ZIP_DIRECTORY}-byte limit"
        ));
    }
    Ok(())
}

/// Counts decompressed bytes and fails past the budget.
struct Budget<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("over the decompressed-size limit"));
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Octal (NUL/space terminated) or GNU base-256 size field.
fn parse_size(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(*b as u64))
                .ok_or("tar size field overflows")?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("bad tar size field {text:?}"))
}

fn cstr(field: &[u8]) -> String {
    String::from_utf8_lossy(&field[..field.iter().position(|b| *b == 0).unwrap_or(field.len())])
        .into_owned()
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), String> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| e.to_string())?;
    if copied != n {
        return Err("the archive ends inside an entry".into());
    }
    Ok(())
}

fn read_exact_vec(r: &mut impl Read, size: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; size as usize];
    r.read_exact(&mut buf)
        .map_err(|e| format!("the archive ends inside an entry: {e}"))?;
    skip(r, padded(size) - size)?;
    Ok(buf)
}

/// The `path` record of pax extended header data ("LEN key=value\n" records).
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    None
}

/// The text of `{top}/{name}` (first directory level) in a gzipped tarball, at most
/// `max` bytes; every other quantity bounded by `limits`.
pub fn top_level_file_in_tgz(
    path: &Path,
    name: &str,
    max: u64,
    limits: Limits,
) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut r = Budget {
        inner: flate2::read::GzDecoder::new(io::BufReader::new(file)),
        left: limits.decompressed,
    };
    let mut long_name: Option<String> = None;
    let mut header = [0u8; BLOCK as usize];
    for _ in 0..limits.entries {
        if let Err(e) = r.read_exact(&mut header) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                format!("the archive has no top-level {name}")
            } else {
                format!("not a tar.gz: {e}")
            });
        }
        if header.iter().all(|b| *b == 0) {
            return Err(format!("the archive has no top-level {name}"));
        }
        let size = parse_size(&header[124..136])?;
        let kind = header[156];
        match kind {
            b'L' | b'K' | b'x' | b'g' => {
                if size > limits.meta_header {
                    return Err(format!(
                        "a tar {} header of {size} bytes is over the {}-byte limit",
                        kind as char, limits.meta_header
                    ));
                }
                let data = read_exact_vec(&mut r, size)?;
                match kind {
                    b'L' => long_name = Some(cstr(&data)),
                    b'x' => long_name = pax_path(&data).or(long_name),
                    _ => {}
                }
                continue;
            }
            _ => {}
        }
        let entry_name = long_name.take().unwrap_or_else(|| {
            let (n, prefix) = (cstr(&header[0..100]), cstr(&header[345..500]));
            let ustar = &header[257..262] == b"ustar";
            if ustar && !prefix.is_empty() {
                format!("{prefix}/{n}")
            } else {
                n
            }
        });
        let parts: Vec<&str> = entry_name.trim_start_matches("./").split('/').collect();
        let regular = kind == b'0' || kind == 0 || kind == b'7';
        if regular && parts.len() == 2 && parts[1] == name {
            if size > max {
                return Err(format!("{name} is too large ({size} bytes, limit {max})"));
            }
            let data = read_exact_vec(&mut r, size)?;
            return String::from_utf8(data).map_err(|_| format!("{name} is not UTF-8"));
        }
        skip(&mut r, padded(size))?;
    }
    Err(format!(
        "the archive has more than {} entries before a top-level {name}",
        limits.entries
    ))
}

#[cfg(test)]
mod tests {
    fn zip_with(entries: usize, zip64: bool) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(zip64);
        for i in 0..entries {
            z.start_file(format!("d/{i}"), opts).unwrap();
        }
        z.finish().unwrap();
        f
    }

    #[test]
    fn zip_directories_are_bounded_before_opening() {
        check_zip_directory(zip_with(3, false).path()).unwrap();
        check_zip_directory(zip_with(3, true).path()).unwrap();
        let big = zip_with(MAX_ZIP_ENTRIES as usize + 1, false);
        let e = check_zip_directory(big.path()).unwrap_err();
        assert!(
            e.contains("lists 100001 entries, over the 100000-entry limit"),
            "{e}"
        );
        let not = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not.path(), b"not a zip at all").unwrap();
        assert!(check_zip_directory(not.path())
            .unwrap_err()
            .starts_with("not a zip"));
    }

    use super::*;
    use std::io::Write;

    fn header(name: &str, size: u64, kind: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn tgz(entries: &[(&str, u8, Vec<u8>)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut gz =
            flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
        for (name, kind, data) in entries {
            gz.write_all(&header(name, data.len() as u64, *kind))
                .unwrap();
            gz.write_all(data).unwrap();
            gz.write_all(&vec![
                0u8;
                (padded(data.len() as u64) - data.len() as u64)
                    as usize
            ])
            .unwrap();
        }
        gz.write_all(&[0u8; 1024]).unwrap();
        gz.finish().unwrap();
        f
    }

    #[test]
    fn finds_the_top_level_file_through_long_names_and_pax() {
        let long = format!("pkg-1.0/{}/deep.txt", "d".repeat(150));
        let f = tgz(&[
            ("././@LongLink", b'L', format!("{long}\0").into_bytes()),
            ("ignored", b'0', b"deep".to_vec()),
            ("pkg-1.0/setup.py", b'0', b"print()".to_vec()),
            (
                "pkg-1.0/PaxHeaders/x",
                b'x',
                b"28 path=pkg-1.0/renamed.txt\n".to_vec(),
            ),
            ("placeholder", b'0', b"renamed".to_vec()),
            (
                "pkg-1.0/PKG-INFO",
                b'0',
                b"Metadata-Version: 2.2\nName: pkg\n".to_vec(),
            ),
        ]);
        let got = top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, LIMITS).unwrap();
        assert!(got.starts_with("Metadata-Version: 2.2"));
        // the same with the tar crate's reading, as a cross-check of the walker
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(f.path()).unwrap(),
        ));
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                long,
                "pkg-1.0/setup.py".into(),
                "pkg-1.0/renamed.txt".into(),
                "pkg-1.0/PKG-INFO".into()
            ]
        );
    }

    #[test]
    fn a_huge_long_name_header_is_refused_without_reading_it() {
        // 64 MiB of long name compresses to ~64 KiB; the walker refuses it at the header
        let f = tgz(&[
            ("././@LongLink", b'L', vec![b'a'; 64 << 20]),
            ("pkg/PKG-INFO", b'0', b"x".to_vec()),
        ]);
        let e = top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, LIMITS).unwrap_err();
        assert!(
            e.contains("tar L header of 67108864 bytes is over the 65536-byte limit"),
            "{e}"
        );
        let f = tgz(&[("pax", b'x', vec![b'1'; 1 << 20])]);
        assert!(top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, LIMITS)
            .unwrap_err()
            .contains("over the"));
    }

    #[test]
    fn entry_count_decompressed_bytes_and_file_size_are_bounded() {
        let many: Vec<(String, u8, Vec<u8>)> = (0..50)
            .map(|i| (format!("pkg/f{i}"), b'0', vec![]))
            .collect();
        let refs: Vec<(&str, u8, Vec<u8>)> = many
            .iter()
            .map(|(n, k, d)| (n.as_str(), *k, d.clone()))
            .collect();
        let f = tgz(&refs);
        let limits = Limits {
            entries: 10,
            ..LIMITS
        };
        assert!(top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, limits)
            .unwrap_err()
            .contains("more than 10 entries"));
        let f = tgz(&[
            ("pkg/big.bin", b'0', vec![0u8; 1 << 20]),
            ("pkg/PKG-INFO", b'0', b"x".to_vec()),
        ]);
        let limits = Limits {
            decompressed: 100_000,
            ..LIMITS
        };
        assert!(top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, limits)
            .unwrap_err()
            .contains("decompressed-size limit"));
        let f = tgz(&[("pkg/PKG-INFO", b'0', vec![b'a'; 4096])]);
        assert!(top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, LIMITS)
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn not_an_archive_and_truncated_archives_are_errors() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"not gzip").unwrap();
        assert!(top_level_file_in_tgz(f.path(), "PKG-INFO", 1024, LIMITS).is_err());
        let whole = tgz(&[("pkg/PKG-INFO", b'0', vec![b'a'; 100])]);
        let bytes = std::fs::read(whole.path()).unwrap();
        let mut gz = flate2::read::GzDecoder::new(&bytes[..]);
        let mut raw = Vec::new();
        gz.read_to_end(&mut raw).unwrap();
        let cut = tempfile::NamedTempFile::new().unwrap();
        let mut enc =
            flate2::write::GzEncoder::new(cut.reopen().unwrap(), flate2::Compression::fast());
        enc.write_all(&raw[..560]).unwrap();
        enc.finish().unwrap();
        assert!(top_level_file_in_tgz(cut.path(), "PKG-INFO", 1024, LIMITS)
            .unwrap_err()
            .contains("ends inside"));
    }
}
