//! Metainfo v1 (BEP 3), single- and multi-file, announce-list (BEP 12), pad files (BEP 47),
//! and path safety. Pure: no I/O.
//!
//! Decisions:
//! - A torrent whose total length is 0 (a single empty file, or only empty files) is
//!   rejected: it has no pieces, so there is nothing to transfer or verify, and every layer
//!   above would need a special case for it.
//! - Paths are checked component by component ([`check_component`]); `.ringswarm` is
//!   refused as any component (the resume records' directory). Besides that, two
//!   non-pad files may not share a path, and a file may not also be a directory of another
//!   (`a` and `a/b`): either would make storage write one file's data over another's.
//! - `name.utf-8` / `path.utf-8` are used when present and valid UTF-8, else `name` / `path`,
//!   which must then be UTF-8.
//! - Pad files (BEP 47) are recognised by `attr` containing `p` only, never by their path.
//! - `piece length` may be any value in 1..=[`MAX_PIECE_LENGTH`] (v1 does not require a power
//!   of two); at most [`MAX_PIECES`] pieces.

use std::path::PathBuf;

use crate::bencode::{self, Dict, Limits, Value};

/// The directory below a destination that holds ringswarm's state (resume records). No
/// torrent may use this name as a path component.
pub const STATE_DIR: &str = ".ringswarm";

/// Largest piece length we accept: piece buffers are allocated whole.
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;
/// Most pieces a torrent may have: the `pieces` string must fit the decoder's default
/// string limit (64 MiB of 20-byte hashes).
pub const MAX_PIECES: u64 = (64 << 20) / 20;

/// What is wrong with a torrent file, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error("torrent is not valid bencode: {0}")]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error("torrent field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("torrent field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
    #[error("unsafe path in torrent field `{field}`: {reason}")]
    UnsafePath { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unsafe_path(field: impl Into<String>, reason: impl Into<String>) -> MetainfoError {
    MetainfoError::UnsafePath {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One file of the torrent, in torrent order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's root; validated (no `..`, no separators,
    /// not empty, no NUL).
    pub path: Vec<String>,
    pub length: u64,
    /// Byte offset of the file in the torrent's concatenated data.
    pub offset: u64,
    /// A BEP 47 pad file (attr `p`): occupies piece space, never written to disk.
    pub pad: bool,
}

/// The info dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Root name: the file name (single-file) or directory name (multi-file); validated as
    /// one safe path component.
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    /// Single-file torrents have one entry whose path is empty (the file is `name` itself).
    pub files: Vec<FileEntry>,
    pub multi_file: bool,
    pub total_length: u64,
    pub private: bool,
}

/// A parsed torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the info dict's raw bytes as received.
    pub info_hash: [u8; 20],
    /// The info dict's raw bytes (served over BEP 9).
    pub info_bytes: Vec<u8>,
    pub announce: Option<String>,
    /// BEP 12 tiers; when the torrent has only `announce`, this is `[[announce]]`.
    pub announce_list: Vec<Vec<String>>,
    pub info: Info,
}

impl Metainfo {
    /// Parses a .torrent file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let root = bencode::decode_with(bytes, &Limits::default())?;
        let root = root
            .as_dict()
            .ok_or_else(|| invalid("torrent", "not a dictionary"))?;
        let info = match root.get(b"info") {
            None => return Err(MetainfoError::Missing { field: "info" }),
            Some(v) => v
                .as_dict()
                .ok_or_else(|| invalid("info", "not a dictionary"))?,
        };
        let announce = match root.get(b"announce") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| invalid("announce", "not a UTF-8 string"))?
                    .to_owned(),
            ),
        };
        let mut announce_list = match root.get(b"announce-list") {
            None => Vec::new(),
            Some(v) => parse_announce_list(v)?,
        };
        if announce_list.is_empty() {
            if let Some(a) = announce.as_ref().filter(|a| !a.is_empty()) {
                announce_list = vec![vec![a.clone()]];
            }
        }
        Ok(Metainfo {
            info_hash: crate::sha::sha1(info.raw),
            info_bytes: info.raw.to_vec(),
            announce,
            announce_list,
            info: parse_info(info)?,
        })
    }

    /// Builds a metainfo from a bare info dict (fetched over BEP 9) plus trackers.
    pub fn from_info_bytes(
        info_bytes: &[u8],
        announce_list: Vec<Vec<String>>,
    ) -> Result<Metainfo, MetainfoError> {
        let value = bencode::decode_with(info_bytes, &Limits::default())?;
        let info = value
            .as_dict()
            .ok_or_else(|| invalid("info", "not a dictionary"))?;
        let info = parse_info(info)?;
        let announce_list = clean_tiers(announce_list);
        Ok(Metainfo {
            info_hash: crate::sha::sha1(info_bytes),
            info_bytes: info_bytes.to_vec(),
            announce: first_tracker(&announce_list),
            announce_list,
            info,
        })
    }

    /// Builds a metainfo from an [`Info`] (used by `create`): encodes the info dict
    /// canonically, hashes it, and sets announce/announce-list from the tiers.
    ///
    /// File offsets and `total_length` are recomputed from the file lengths, so they always
    /// agree with the encoded dict; empty tracker URLs and empty tiers are dropped, as
    /// parsing would drop them.
    pub fn from_info(mut info: Info, announce_list: Vec<Vec<String>>) -> Metainfo {
        let mut offset = 0u64;
        for f in &mut info.files {
            f.offset = offset;
            offset = offset.saturating_add(f.length);
        }
        info.total_length = offset;
        let info_bytes = encode_info(&info);
        let announce_list = clean_tiers(announce_list);
        Metainfo {
            info_hash: crate::sha::sha1(&info_bytes),
            info_bytes,
            announce: first_tracker(&announce_list),
            announce_list,
            info,
        }
    }

    /// The .torrent file bytes (canonical bencode; `info` is `info_bytes` verbatim).
    pub fn to_bytes(&self) -> Vec<u8> {
        let announce = self
            .announce
            .clone()
            .or_else(|| first_tracker(&self.announce_list));
        let trackers: usize = self.announce_list.iter().map(Vec::len).sum();
        let list: Vec<Value<'_>> = self
            .announce_list
            .iter()
            .map(|tier| Value::List(tier.iter().map(|t| Value::Bytes(t.as_bytes())).collect()))
            .collect();
        let mut out = Vec::with_capacity(self.info_bytes.len() + 256);
        // Keys in sorted order, as canonical bencode wants: announce < announce-list <
        // created by < info. Written by hand so the info dict goes out byte for byte.
        out.push(b'd');
        if let Some(a) = &announce {
            bencode::write_bytes(&mut out, b"announce");
            bencode::write_bytes(&mut out, a.as_bytes());
        }
        // A lone tracker is said by `announce` alone, unless `announce` says something else.
        if trackers > 1
            || self.announce_list.len() > 1
            || (trackers == 1 && announce != first_tracker(&self.announce_list))
        {
            bencode::write_bytes(&mut out, b"announce-list");
            bencode::encode_into(&Value::List(list), &mut out);
        }
        bencode::write_bytes(&mut out, b"created by");
        bencode::write_bytes(&mut out, b"ringswarm");
        bencode::write_bytes(&mut out, b"info");
        out.extend_from_slice(&self.info_bytes);
        out.push(b'e');
        out
    }

    pub fn piece_count(&self) -> u32 {
        self.info.pieces.len() as u32
    }

    /// Length of piece `index` (the last one may be short); 0 for an index past the end.
    pub fn piece_size(&self, index: u32) -> u32 {
        let count = self.info.pieces.len() as u64;
        let index = u64::from(index);
        if index >= count {
            return 0;
        }
        let start = index.saturating_mul(self.info.piece_length);
        let size = self
            .info
            .total_length
            .saturating_sub(start)
            .min(self.info.piece_length);
        u32::try_from(size).unwrap_or(u32::MAX)
    }

    /// Where `file` lands below a destination directory: `name` for single-file,
    /// `name/a/b` for multi-file. Never escapes the destination (paths are validated).
    pub fn relative_path(&self, file: &FileEntry) -> PathBuf {
        let mut p = PathBuf::from(&self.info.name);
        if self.info.multi_file {
            p.extend(&file.path);
        }
        p
    }
}

/// Checks one path component from a torrent; `field` names it in the error.
pub fn check_component(component: &str, field: &str) -> Result<(), MetainfoError> {
    let reason = if component.is_empty() {
        "empty path component"
    } else if component == "." {
        "`.` is not allowed as a path component"
    } else if component == ".." {
        "`..` is not allowed (would leave the destination directory)"
    } else if component.starts_with('/') || component.starts_with('\\') {
        "absolute path"
    } else if component.contains('/') || component.contains('\\') {
        "path component contains a path separator"
    } else if component.contains('\0') {
        "path component contains a NUL byte"
    } else if component == STATE_DIR {
        // Downloads keep their resume records in DEST/.ringswarm: a torrent writing there
        // (or into DEST/x/.ringswarm, the records of a download into DEST/x) could forge them.
        "`.ringswarm` is reserved for ringswarm's resume records"
    } else {
        return Ok(());
    };
    Err(unsafe_path(field, reason))
}

fn first_tracker(tiers: &[Vec<String>]) -> Option<String> {
    tiers.iter().flatten().next().cloned()
}

fn clean_tiers(tiers: Vec<Vec<String>>) -> Vec<Vec<String>> {
    tiers
        .into_iter()
        .map(|tier| {
            tier.into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|tier| !tier.is_empty())
        .collect()
}

/// BEP 12: a list of tiers, each a list of URLs. Empty URLs and tiers are dropped.
fn parse_announce_list(v: &Value<'_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    let tiers = v
        .as_list()
        .ok_or_else(|| invalid("announce-list", "not a list"))?;
    let mut out = Vec::with_capacity(tiers.len());
    for (i, tier) in tiers.iter().enumerate() {
        let urls = tier
            .as_list()
            .ok_or_else(|| invalid(format!("announce-list[{i}]"), "not a list"))?;
        let mut t = Vec::with_capacity(urls.len());
        for (j, url) in urls.iter().enumerate() {
            let url = url
                .as_str()
                .ok_or_else(|| invalid(format!("announce-list[{i}][{j}]"), "not a UTF-8 string"))?;
            if !url.is_empty() {
                t.push(url.to_owned());
            }
        }
        if !t.is_empty() {
            out.push(t);
        }
    }
    Ok(out)
}

/// The `.utf-8` variant of a text field of the info dict when it is present and valid, else
/// the plain one, which must be UTF-8. Returns the text and the name of the key used.
fn text_field<'a>(
    dict: &Dict<'a>,
    key: &'static str,
    key_utf8: &'static str,
) -> Result<Option<(&'a str, &'static str)>, MetainfoError> {
    if let Some(s) = dict.get(key_utf8.as_bytes()).and_then(Value::as_str) {
        return Ok(Some((s, key_utf8)));
    }
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => match std::str::from_utf8(b) {
            Ok(s) => Ok(Some((s, key))),
            Err(_) => Err(invalid(format!("info.{key}"), "not valid UTF-8")),
        },
        Some(_) => Err(invalid(format!("info.{key}"), "not a string")),
    }
}

fn get_int(dict: &Dict<'_>, key: &str, field: &str) -> Result<Option<i64>, MetainfoError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Int(i)) => Ok(Some(*i)),
        Some(_) => Err(invalid(field, "not an integer")),
    }
}

fn parse_info(info: &Dict<'_>) -> Result<Info, MetainfoError> {
    let (name, name_key) = text_field(info, "name", "name.utf-8")?
        .ok_or(MetainfoError::Missing { field: "info.name" })?;
    check_component(name, &format!("info.{name_key}"))?;

    let piece_length =
        get_int(info, "piece length", "info.piece length")?.ok_or(MetainfoError::Missing {
            field: "info.piece length",
        })?;
    let piece_length = u64::try_from(piece_length)
        .ok()
        .filter(|&p| p > 0 && p <= MAX_PIECE_LENGTH)
        .ok_or_else(|| {
            invalid(
                "info.piece length",
                format!("{piece_length} is not between 1 and {MAX_PIECE_LENGTH}"),
            )
        })?;

    let pieces = match info.get(b"pieces") {
        None => {
            return Err(MetainfoError::Missing {
                field: "info.pieces",
            })
        }
        Some(v) => v
            .as_bytes()
            .ok_or_else(|| invalid("info.pieces", "not a string"))?,
    };
    if pieces.len() % 20 != 0 {
        return Err(invalid(
            "info.pieces",
            format!("length {} is not a multiple of 20", pieces.len()),
        ));
    }
    if pieces.len() as u64 / 20 > MAX_PIECES {
        return Err(invalid(
            "info.pieces",
            format!("more than {MAX_PIECES} pieces"),
        ));
    }
    let pieces: Vec<[u8; 20]> = pieces
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();

    let private = matches!(info.get(b"private"), Some(Value::Int(1)));

    let (files, multi_file) = match (info.get(b"length"), info.get(b"files")) {
        (Some(_), Some(_)) => {
            return Err(invalid("info", "has both `length` and `files`"));
        }
        (None, None) => {
            return Err(invalid("info", "has neither `length` nor `files`"));
        }
        (Some(_), None) => {
            let length = get_int(info, "length", "info.length")?.unwrap_or(0);
            let length = u64::try_from(length)
                .map_err(|_| invalid("info.length", format!("negative ({length})")))?;
            let file = FileEntry {
                path: Vec::new(),
                length,
                offset: 0,
                pad: false,
            };
            (vec![file], false)
        }
        (None, Some(files)) => (parse_files(files)?, true),
    };

    let mut total_length = 0u64;
    for f in &files {
        total_length = total_length
            .checked_add(f.length)
            .ok_or_else(|| invalid("info.files", "total length does not fit in 64 bits"))?;
    }
    if total_length == 0 {
        return Err(invalid(
            if multi_file {
                "info.files"
            } else {
                "info.length"
            },
            "total length is 0: nothing to share",
        ));
    }
    let want = total_length.div_ceil(piece_length);
    if pieces.len() as u64 != want {
        return Err(invalid(
            "info.pieces",
            format!(
                "has {} hashes but {total_length} bytes in pieces of {piece_length} need {want}",
                pieces.len()
            ),
        ));
    }

    Ok(Info {
        name: name.to_owned(),
        piece_length,
        pieces,
        files,
        multi_file,
        total_length,
        private,
    })
}

fn parse_files(files: &Value<'_>) -> Result<Vec<FileEntry>, MetainfoError> {
    let list = files
        .as_list()
        .ok_or_else(|| invalid("info.files", "not a list"))?;
    if list.is_empty() {
        return Err(invalid("info.files", "empty list"));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut offset = 0u64;
    for (i, item) in list.iter().enumerate() {
        let at = format!("info.files[{i}]");
        let file = item
            .as_dict()
            .ok_or_else(|| invalid(at.clone(), "not a dictionary"))?;
        let length = get_int(file, "length", &format!("{at}.length"))?
            .ok_or_else(|| invalid(format!("{at}.length"), "missing"))?;
        let length = u64::try_from(length)
            .map_err(|_| invalid(format!("{at}.length"), format!("negative ({length})")))?;
        let path = parse_path(file, &at)?;
        let pad = file
            .get(b"attr")
            .and_then(Value::as_bytes)
            .is_some_and(|a| a.contains(&b'p'));
        out.push(FileEntry {
            path,
            length,
            offset,
            pad,
        });
        offset = offset.checked_add(length).ok_or_else(|| {
            invalid(
                format!("{at}.length"),
                "total length does not fit in 64 bits",
            )
        })?;
    }
    check_collisions(&out)?;
    Ok(out)
}

/// `path.utf-8` when present and all UTF-8, else `path`, whose parts must be UTF-8.
fn parse_path(file: &Dict<'_>, at: &str) -> Result<Vec<String>, MetainfoError> {
    let utf8 = file
        .get(b"path.utf-8")
        .and_then(Value::as_list)
        .filter(|parts| parts.iter().all(|p| p.as_str().is_some()));
    let (parts, key) = match utf8 {
        Some(parts) => (parts, "path.utf-8"),
        None => match file.get(b"path") {
            None => return Err(invalid(format!("{at}.path"), "missing")),
            Some(v) => (
                v.as_list()
                    .ok_or_else(|| invalid(format!("{at}.path"), "not a list"))?,
                "path",
            ),
        },
    };
    if parts.is_empty() {
        return Err(unsafe_path(format!("{at}.{key}"), "empty path"));
    }
    let mut path = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let field = format!("{at}.{key}[{j}]");
        let s = match part {
            Value::Bytes(b) => {
                std::str::from_utf8(b).map_err(|_| invalid(field.clone(), "not valid UTF-8"))?
            }
            _ => return Err(invalid(field, "not a string")),
        };
        check_component(s, &field)?;
        path.push(s.to_owned());
    }
    Ok(path)
}

/// Two real files on one path, or a file that is also another's directory, would overwrite
/// each other on disk. Pad files are never written, so they may repeat.
fn check_collisions(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut sorted: Vec<(&[String], usize)> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.pad)
        .map(|(i, f)| (&f.path[..], i))
        .collect();
    sorted.sort();
    // In sorted order, a path that is a prefix of another sits right before it (or before
    // another path with the same prefix), so neighbours are enough.
    for pair in sorted.windows(2) {
        let [(a, ia), (b, ib)] = pair else { continue };
        if a == b {
            return Err(unsafe_path(
                format!("info.files[{}].path", ia.max(ib)),
                format!("same path as info.files[{}]", ia.min(ib)),
            ));
        }
        if b.starts_with(a) {
            return Err(unsafe_path(
                format!("info.files[{ib}].path"),
                format!("lies inside info.files[{ia}], which is a file"),
            ));
        }
    }
    Ok(())
}

fn encode_info(info: &Info) -> Vec<u8> {
    let pieces: Vec<u8> = info.pieces.concat();
    let mut entries: Vec<(&[u8], Value<'_>)> = vec![
        (b"name", Value::Bytes(info.name.as_bytes())),
        (b"piece length", int(info.piece_length)),
        (b"pieces", Value::Bytes(&pieces)),
    ];
    if info.multi_file {
        let files = info
            .files
            .iter()
            .map(|f| {
                let mut e: Vec<(&[u8], Value<'_>)> = vec![
                    (b"length", int(f.length)),
                    (
                        b"path",
                        Value::List(f.path.iter().map(|c| Value::Bytes(c.as_bytes())).collect()),
                    ),
                ];
                if f.pad {
                    e.push((b"attr", Value::Bytes(b"p")));
                }
                bencode::dict(e)
            })
            .collect();
        entries.push((b"files", Value::List(files)));
    } else {
        entries.push((b"length", int(info.total_length)));
    }
    if info.private {
        entries.push((b"private", Value::Int(1)));
    }
    bencode::encode(&bencode::dict(entries))
}

/// Lengths in an `Info` come from u64; bencode integers are i64. Anything past i64::MAX
/// cannot be a real torrent, so it saturates (parsing then rejects the piece count).
fn int(n: u64) -> Value<'static> {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::{dict, encode};
    use proptest::prelude::*;

    const PL: u64 = 16384;

    fn b(s: &[u8]) -> Value<'_> {
        Value::Bytes(s)
    }

    fn pieces_for(total: u64) -> Vec<u8> {
        (0..total.div_ceil(PL))
            .flat_map(|i| crate::sha::sha1(&i.to_le_bytes()))
            .collect()
    }

    fn file<'a>(len: i64, path: &[&'a [u8]]) -> Value<'a> {
        dict([
            (&b"length"[..], Value::Int(len)),
            (b"path", Value::List(path.iter().map(|p| b(p)).collect())),
        ])
    }

    fn pad(len: i64) -> Value<'static> {
        let Value::Dict(mut d) = file(len, &[b".pad", b"x"]) else {
            unreachable!()
        };
        d.entries.push((b"attr", b(b"p")));
        Value::Dict(d)
    }

    /// A torrent around an info dict; `extra` adds or overrides info keys.
    fn torrent_with<'a>(
        files: Option<Vec<Value<'a>>>,
        total: u64,
        pieces: &'a [u8],
        extra: Vec<(&'a [u8], Value<'a>)>,
    ) -> Vec<u8> {
        let mut info: Vec<(&[u8], Value<'_>)> = vec![
            (b"name", b(b"root")),
            (b"piece length", Value::Int(PL as i64)),
            (b"pieces", b(pieces)),
        ];
        match files {
            Some(files) => info.push((b"files", Value::List(files))),
            None => info.push((b"length", Value::Int(total as i64))),
        }
        for (k, v) in extra {
            info.retain(|(key, _)| *key != k);
            info.push((k, v));
        }
        encode(&dict([
            (&b"announce"[..], b(b"http://t/announce")),
            (b"info", dict(info)),
        ]))
    }

    fn multi(files: Vec<Value<'_>>, total: u64) -> Result<Metainfo, MetainfoError> {
        let pieces = pieces_for(total);
        Metainfo::from_bytes(&torrent_with(Some(files), total, &pieces, vec![]))
    }

    fn field_of(e: MetainfoError) -> (String, String) {
        match e {
            MetainfoError::Invalid { field, reason } => (field, reason),
            MetainfoError::UnsafePath { field, reason } => (format!("unsafe {field}"), reason),
            MetainfoError::Missing { field } => (format!("missing {field}"), String::new()),
            MetainfoError::Bencode(e) => (format!("bencode {e}"), String::new()),
        }
    }

    #[test]
    fn single_file() {
        let pieces = pieces_for(40_000);
        let m = Metainfo::from_bytes(&torrent_with(None, 40_000, &pieces, vec![])).unwrap();
        assert!(!m.info.multi_file);
        assert_eq!(m.info.name, "root");
        assert_eq!(m.info.total_length, 40_000);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_size(0), 16384);
        assert_eq!(m.piece_size(2), 40_000 - 2 * 16384);
        assert_eq!(m.piece_size(3), 0);
        assert_eq!(m.info.files.len(), 1);
        assert!(m.info.files[0].path.is_empty());
        assert_eq!(m.relative_path(&m.info.files[0]), PathBuf::from("root"));
        assert_eq!(m.announce.as_deref(), Some("http://t/announce"));
        assert_eq!(m.announce_list, vec![vec!["http://t/announce".to_string()]]);
        assert_eq!(m.info_hash, crate::sha::sha1(&m.info_bytes));
        assert!(!m.info.private);
    }

    #[test]
    fn multi_file_with_pad() {
        let m = multi(
            vec![
                file(100, &[b"a"]),
                pad(16284),
                file(0, &[b"dir", b"empty"]),
                file(5, &[b"dir", b"b"]),
            ],
            16389,
        )
        .unwrap();
        assert!(m.info.multi_file);
        let f = &m.info.files;
        assert_eq!(f.len(), 4);
        assert_eq!((f[1].offset, f[1].length, f[1].pad), (100, 16284, true));
        assert_eq!((f[3].offset, f[3].pad), (16384, false));
        assert_eq!(m.relative_path(&f[3]), PathBuf::from("root/dir/b"));
        assert_eq!(m.piece_size(1), 5);
    }

    #[test]
    fn info_hash_covers_the_raw_bytes_as_received() {
        // Keys out of order: the hash must be of these bytes, not of a re-encoding.
        let mut info = b"d4:name1:a6:lengthi5e12:piece lengthi16384e6:pieces20:".to_vec();
        info.extend_from_slice(&[7u8; 20]);
        info.push(b'e');
        let mut t = b"d4:info".to_vec();
        t.extend_from_slice(&info);
        t.push(b'e');
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info_bytes, info);
        assert_eq!(m.info_hash, crate::sha::sha1(&info));
        assert_eq!(m.announce, None);
        assert!(m.announce_list.is_empty());
        let again = Metainfo::from_info_bytes(&info, vec![]).unwrap();
        assert_eq!(again, m);
        // to_bytes keeps the info dict verbatim.
        assert_eq!(
            Metainfo::from_bytes(&m.to_bytes()).unwrap().info_hash,
            m.info_hash
        );
    }

    #[test]
    fn announce_list() {
        let pieces = pieces_for(1);
        let mut t = torrent_with(None, 1, &pieces, vec![]);
        // Splice an announce-list (sorted after `announce`) in front of `info`.
        let at = t.windows(6).position(|w| w == b"4:info").unwrap();
        let list = b"13:announce-listll1:a0:el1:b1:celee";
        t.splice(at..at, list.iter().copied());
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.announce.as_deref(), Some("http://t/announce"));
        assert_eq!(
            m.announce_list,
            vec![
                vec!["a".to_string()],
                vec!["b".to_string(), "c".to_string()]
            ]
        );
        let bad = [&t[..at], b"13:announce-listli1ee", &t[at + list.len()..]].concat();
        let (field, _) = field_of(Metainfo::from_bytes(&bad).unwrap_err());
        assert_eq!(field, "announce-list[0]");
    }

    #[test]
    fn to_bytes_writes_announce_list_only_when_needed() {
        let pieces = pieces_for(1);
        let m = Metainfo::from_bytes(&torrent_with(None, 1, &pieces, vec![])).unwrap();
        let one = m.to_bytes();
        let v = crate::bencode::decode(&one).unwrap();
        let d = v.as_dict().unwrap();
        assert!(d.get(b"announce-list").is_none());
        assert_eq!(d.get(b"created by").unwrap().as_str(), Some("ringswarm"));
        let two = Metainfo::from_info(m.info.clone(), vec![vec!["u1".into()], vec!["u2".into()]]);
        let bytes = two.to_bytes();
        let v = crate::bencode::decode(&bytes).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.get(b"announce").unwrap().as_str(), Some("u1"));
        assert_eq!(d.get(b"announce-list").unwrap().as_list().unwrap().len(), 2);
        assert_eq!(Metainfo::from_bytes(&bytes).unwrap(), two);
    }

    #[test]
    fn utf8_variants_are_preferred() {
        let pieces = pieces_for(3);
        let t = torrent_with(
            Some(vec![dict([
                (&b"length"[..], Value::Int(3)),
                (b"path", Value::List(vec![b(b"\xff\xfe")])),
                (b"path.utf-8", Value::List(vec![b("é".as_bytes())])),
            ])]),
            3,
            &pieces,
            vec![
                (b"name", b(b"\xe9t\xe9")),
                (b"name.utf-8", b("été".as_bytes())),
            ],
        );
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info.name, "été");
        assert_eq!(m.info.files[0].path, vec!["é".to_string()]);
    }

    #[test]
    fn non_utf8_text_is_rejected_naming_the_field() {
        let pieces = pieces_for(3);
        let t = torrent_with(None, 3, &pieces, vec![(b"name", b(b"\xe9t\xe9"))]);
        let (field, reason) = field_of(Metainfo::from_bytes(&t).unwrap_err());
        assert_eq!(field, "info.name");
        assert!(reason.contains("UTF-8"), "{reason}");
        let e = multi(vec![file(3, &[b"ok", b"\xff"])], 3).unwrap_err();
        assert_eq!(field_of(e).0, "info.files[0].path[1]");
    }

    #[test]
    fn unsafe_paths_are_rejected_naming_the_field() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "empty"),
            (b".ringswarm", "reserved"),
            (b".", "`.`"),
            (b"..", "`..`"),
            (b"a/b", "separator"),
            (b"a\\b", "separator"),
            (b"a\0b", "NUL"),
            (b"/etc", "absolute"),
            (b"\\x", "absolute"),
        ];
        for (bad, why) in cases {
            let e = multi(vec![file(1, &[b"ok"]), file(2, &[b"dir", bad])], 3).unwrap_err();
            let text = e.to_string();
            let (field, reason) = field_of(e);
            assert_eq!(field, "unsafe info.files[1].path[1]", "{bad:?}");
            assert!(reason.contains(why), "{bad:?}: {reason}");
            assert!(text.contains("`info.files[1].path[1]`"), "{text}");

            let pieces = pieces_for(3);
            let t = torrent_with(None, 3, &pieces, vec![(b"name", b(bad))]);
            let (field, reason) = field_of(Metainfo::from_bytes(&t).unwrap_err());
            assert_eq!(field, "unsafe info.name", "{bad:?}");
            assert!(reason.contains(why), "{bad:?}: {reason}");
        }
        let e = multi(vec![file(1, &[])], 1).unwrap_err();
        assert_eq!(field_of(e).0, "unsafe info.files[0].path");
    }

    #[test]
    fn colliding_paths_are_rejected() {
        let e = multi(
            vec![file(1, &[b"a"]), file(1, &[b"b"]), file(1, &[b"a"])],
            3,
        )
        .unwrap_err();
        let (field, reason) = field_of(e);
        assert_eq!(field, "unsafe info.files[2].path");
        assert!(reason.contains("info.files[0]"), "{reason}");
        let e = multi(
            vec![file(1, &[b"a", b"b", b"c"]), file(1, &[b"a", b"b"])],
            2,
        )
        .unwrap_err();
        assert_eq!(field_of(e).0, "unsafe info.files[0].path");
        // Pad files are never written: repeats are fine, and so is a near-miss name.
        assert!(multi(
            vec![file(1, &[b"a"]), pad(1), pad(1), file(1, &[b"a b"])],
            4
        )
        .is_ok());
    }

    #[test]
    fn piece_fields_are_checked() {
        let pieces = pieces_for(3);
        for pl in [0, -1, (MAX_PIECE_LENGTH + 1) as i64] {
            let t = torrent_with(None, 3, &pieces, vec![(b"piece length", Value::Int(pl))]);
            assert_eq!(
                field_of(Metainfo::from_bytes(&t).unwrap_err()).0,
                "info.piece length"
            );
        }
        let t = torrent_with(None, 3, &pieces[..19], vec![]);
        assert_eq!(
            field_of(Metainfo::from_bytes(&t).unwrap_err()).0,
            "info.pieces"
        );
        // One hash too many.
        let t = torrent_with(None, 3, &pieces_for(PL + 1)[..40], vec![]);
        let (field, reason) = field_of(Metainfo::from_bytes(&t).unwrap_err());
        assert_eq!(field, "info.pieces");
        assert!(reason.contains("need 1"), "{reason}");
        let t = torrent_with(None, 3, &pieces, vec![(b"pieces", Value::Int(1))]);
        assert_eq!(
            field_of(Metainfo::from_bytes(&t).unwrap_err()).0,
            "info.pieces"
        );
    }

    #[test]
    fn lengths_are_checked() {
        let e = multi(vec![file(-1, &[b"a"])], 1).unwrap_err();
        assert_eq!(field_of(e).0, "info.files[0].length");
        let big = i64::MAX;
        let e = multi(
            vec![file(big, &[b"a"]), file(big, &[b"b"]), file(big, &[b"c"])],
            1,
        )
        .unwrap_err();
        assert_eq!(field_of(e).0, "info.files[2].length");
        let pieces = pieces_for(1);
        let t = torrent_with(None, 1, &pieces, vec![(b"length", Value::Int(-5))]);
        assert_eq!(
            field_of(Metainfo::from_bytes(&t).unwrap_err()).0,
            "info.length"
        );
    }

    #[test]
    fn zero_length_torrents_are_rejected() {
        let t = torrent_with(None, 0, &[], vec![]);
        let (field, reason) = field_of(Metainfo::from_bytes(&t).unwrap_err());
        assert_eq!(field, "info.length");
        assert!(reason.contains("nothing to share"));
        let e = multi(vec![file(0, &[b"a"]), file(0, &[b"b"])], 0).unwrap_err();
        assert_eq!(field_of(e).0, "info.files");
    }

    #[test]
    fn structure_errors() {
        let e = Metainfo::from_bytes(b"le").unwrap_err();
        assert_eq!(field_of(e).0, "torrent");
        let e = Metainfo::from_bytes(b"d8:announce1:xe").unwrap_err();
        assert_eq!(field_of(e).0, "missing info");
        let e = Metainfo::from_bytes(b"d4:infoi1ee").unwrap_err();
        assert_eq!(field_of(e).0, "info");
        assert!(matches!(
            Metainfo::from_bytes(b"d4:info").unwrap_err(),
            MetainfoError::Bencode(_)
        ));
        let pieces = pieces_for(1);
        let t = torrent_with(
            Some(vec![file(1, &[b"a"])]),
            1,
            &pieces,
            vec![(b"length", Value::Int(1))],
        );
        assert_eq!(field_of(Metainfo::from_bytes(&t).unwrap_err()).0, "info");
        let e = multi(vec![], 1).unwrap_err();
        assert_eq!(field_of(e).0, "info.files");
        let e = multi(vec![Value::Int(1)], 1).unwrap_err();
        assert_eq!(field_of(e).0, "info.files[0]");
        let e = multi(vec![dict([(&b"length"[..], Value::Int(1))])], 1).unwrap_err();
        assert_eq!(field_of(e).0, "info.files[0].path");
    }

    #[test]
    fn private_flag() {
        let pieces = pieces_for(1);
        let t = torrent_with(None, 1, &pieces, vec![(b"private", Value::Int(1))]);
        let m = Metainfo::from_bytes(&t).unwrap();
        assert!(m.info.private);
        let rebuilt = Metainfo::from_info(m.info.clone(), m.announce_list.clone());
        assert_eq!(rebuilt.info_bytes, m.info_bytes);
    }

    #[test]
    fn check_component_accepts_ordinary_names() {
        for ok in ["a", "...", ".hidden", "a b", "é", "x:y", "..a"] {
            check_component(ok, "f").unwrap();
        }
    }

    fn arb_info() -> impl Strategy<Value = Info> {
        let name = "[a-zA-Z0-9_é€ .-]{1,10}".prop_filter("not . or ..", |s| s != "." && s != "..");
        let files = proptest::collection::vec(
            (
                proptest::collection::vec("[a-z0-9_ü]{1,6}", 0..3),
                0u64..70_000,
                any::<bool>(),
            ),
            1..6,
        );
        (
            name,
            14u32..19,
            files,
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(name, shift, files, multi_file, private, seed)| {
                let piece_length = 1u64 << shift;
                let mut entries: Vec<FileEntry> = files
                    .into_iter()
                    .enumerate()
                    .map(|(i, (rest, length, pad))| {
                        // A distinct first component keeps paths from colliding.
                        let mut path = vec![format!("f{i}")];
                        path.extend(rest);
                        FileEntry {
                            path,
                            length,
                            offset: 0,
                            pad,
                        }
                    })
                    .collect();
                if !multi_file {
                    entries.truncate(1);
                    entries[0].path.clear();
                    entries[0].pad = false;
                }
                entries[0].length += 1;
                let total: u64 = entries.iter().map(|f| f.length).sum();
                let pieces = (0..total.div_ceil(piece_length))
                    .map(|i| crate::sha::sha1(&[seed.to_le_bytes(), i.to_le_bytes()].concat()))
                    .collect();
                let mut offset = 0;
                for f in &mut entries {
                    f.offset = offset;
                    offset += f.length;
                }
                Info {
                    name,
                    piece_length,
                    pieces,
                    files: entries,
                    multi_file,
                    total_length: total,
                    private,
                }
            })
    }

    fn arb_tiers() -> impl Strategy<Value = Vec<Vec<String>>> {
        proptest::collection::vec(
            proptest::collection::vec("(http|udp)://[a-z]{1,8}(:[0-9]{1,5})?/announce", 1..3),
            0..3,
        )
    }

    proptest! {
        #[test]
        fn round_trip(info in arb_info(), tiers in arb_tiers()) {
            let m = Metainfo::from_info(info.clone(), tiers.clone());
            prop_assert_eq!(&m.info, &info);
            prop_assert_eq!(&m.announce_list, &tiers);
            let parsed = Metainfo::from_bytes(&m.to_bytes()).unwrap();
            prop_assert_eq!(&parsed, &m);
            let from_info = Metainfo::from_info_bytes(&m.info_bytes, tiers).unwrap();
            prop_assert_eq!(&from_info, &m);
            let sizes: u64 = (0..m.piece_count()).map(|i| u64::from(m.piece_size(i))).sum();
            prop_assert_eq!(sizes, m.info.total_length);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Metainfo::from_bytes(&bytes);
            let _ = Metainfo::from_info_bytes(&bytes, vec![]);
        }

        #[test]
        fn never_panics_on_mutated_torrents(
            info in arb_info(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Metainfo::from_info(info, vec![vec!["http://t/a".into()]]).to_bytes();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            if let Ok(m) = Metainfo::from_bytes(&bytes) {
                for f in &m.info.files {
                    let p = m.relative_path(f);
                    prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                }
            }
        }
    }
}
