//! Storage tests on a real filesystem (O_DIRECT needs one: /var/tmp, else the temp dir).

use super::*;
use proptest::prelude::*;

fn test_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringswarm-storage-")
        .tempdir_in("/var/tmp")
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix("ringswarm-storage-")
                .tempdir()
        })
        .expect("a temporary directory")
}

fn file(name: &str, length: u64) -> FileSpec {
    FileSpec {
        path: PathBuf::from(name),
        length,
        pad: false,
    }
}

fn pad(length: u64) -> FileSpec {
    FileSpec {
        path: PathBuf::from(".pad").join(length.to_string()),
        length,
        pad: true,
    }
}

/// The torrent's byte stream: file bytes from a generator, pad bytes zero.
fn stream(layout: &Layout) -> Vec<u8> {
    let mut out = Vec::with_capacity(layout.total_length() as usize);
    for (i, f) in layout.files().iter().enumerate() {
        for j in 0..f.length {
            out.push(if f.pad {
                0
            } else {
                (((i as u64 + 1) * 131 + j * 7) % 251 + 1) as u8
            });
        }
    }
    out
}

fn piece_buf(st: &Storage, data: &[u8], index: u32) -> AlignedBuf {
    let r = st.layout().piece_range(index).unwrap();
    let mut buf = AlignedBuf::new(st.piece_buffer_len());
    // Garbage past the piece: it must never reach a file's real bytes.
    buf.as_mut_slice().fill(0xee);
    buf[..(r.end - r.start) as usize].copy_from_slice(&data[r.start as usize..r.end as usize]);
    buf
}

fn hashes(layout: &Layout, data: &[u8]) -> Vec<[u8; 20]> {
    (0..layout.piece_count())
        .map(|p| {
            let r = layout.piece_range(p).unwrap();
            crate::verify::sha1(&data[r.start as usize..r.end as usize])
        })
        .collect()
}

/// Checks every file on disk against the stream, byte for byte and in length.
fn check_files(root: &Path, layout: &Layout, data: &[u8]) {
    for (i, f) in layout.files().iter().enumerate() {
        let path = root.join(&f.path);
        if f.pad {
            assert!(!path.exists(), "pad file {} was created", path.display());
            continue;
        }
        let on_disk = fs::read(&path).unwrap();
        let start = layout.file_start(i) as usize;
        assert_eq!(on_disk.len() as u64, f.length, "{}", path.display());
        assert!(
            on_disk == data[start..start + f.length as usize],
            "{} differs",
            path.display()
        );
    }
}

/// Multi-file with pad files (as `ringswarm create` makes), odd sizes, a 0-byte file, a
/// file under 4096 bytes, and a total that is not a multiple of 4096.
fn padded_layout() -> Layout {
    let pl = 16384;
    Layout::new(
        pl,
        vec![
            file("d/a.bin", 10000),
            pad(pl - 10000),
            file("d/empty", 0),
            file("d/e/small", 100),
            pad(pl - 100),
            file("whole", 3 * 4096),
            pad(pl - 3 * 4096),
            file("big", 2 * pl + 5000),
            pad(pl - 5000),
            file("last", 20001),
        ],
    )
}

/// Made by another tool: no pad files, files start mid-piece.
fn foreign_layout() -> Layout {
    Layout::new(
        8192,
        vec![
            file("x/one", 5000),
            file("x/two", 8192),
            file("x/zero", 0),
            file("x/three", 4096 * 3),
            file("x/four", 1),
            file("x/five", 9000),
        ],
    )
}

fn write_all_pieces(st: &Storage, data: &[u8], order: impl Iterator<Item = u32>) {
    for p in order {
        st.write_piece(p, &piece_buf(st, data, p)).unwrap();
    }
}

#[test]
fn storage_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Storage>();
}

#[test]
fn write_every_piece_then_finish() {
    for layout in [padded_layout(), foreign_layout()] {
        let dir = test_dir();
        let root = dir.path().join("dest");
        let data = stream(&layout);
        let st = Storage::open(&root, layout.clone(), OpenMode::Download).unwrap();
        for (i, f) in layout.files().iter().enumerate() {
            if !f.pad {
                // Preallocated (or created) at the right size, 0-byte files too.
                assert_eq!(fs::metadata(root.join(&f.path)).unwrap().len(), f.length);
                assert!(st.fd_buffered(i).is_some());
            } else {
                assert!(st.fd_buffered(i).is_none());
            }
        }
        let n = layout.piece_count();
        write_all_pieces(&st, &data, (0..n).rev());
        st.sync().unwrap();
        st.finish().unwrap();
        check_files(&root, &layout, &data);

        // Read back every piece.
        let mut buf = AlignedBuf::new(st.piece_buffer_len());
        for p in 0..n {
            buf.as_mut_slice().fill(0xaa);
            st.read_piece(p, &mut buf).unwrap();
            let r = layout.piece_range(p).unwrap();
            assert!(
                buf[..(r.end - r.start) as usize] == data[r.start as usize..r.end as usize],
                "piece {p}"
            );
        }
        let all = st.recheck(&hashes(&layout, &data), 2).unwrap();
        assert!(all.is_complete());
        drop(st);

        // Seeding the result works too.
        let seed = Storage::open(&root, layout.clone(), OpenMode::Seed).unwrap();
        assert!(seed
            .recheck(&hashes(&layout, &data), 3)
            .unwrap()
            .is_complete());
        assert!(seed.write_piece(0, &piece_buf(&seed, &data, 0)).is_err());
        seed.finish().unwrap();
        seed.mark_dont_need();
    }
}

#[test]
fn padded_tail_is_truncated_by_finish_and_by_reopen() {
    let dir = test_dir();
    let layout = Layout::new(8192, vec![file("t", 8192 + 100)]);
    let data = stream(&layout);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    let path = dir.path().join("t");
    let plan = st.write_plan(1);
    assert_eq!(plan.len(), 1);
    if st.fd_direct(0).is_none() {
        eprintln!(
            "skipping the padded-tail check: {} refuses O_DIRECT",
            dir.path().display()
        );
        return;
    }
    assert_eq!(
        (plan[0].len, plan[0].data_len, plan[0].direct),
        (4096, 100, true)
    );
    st.write_piece(1, &piece_buf(&st, &data, 1)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 8192 + 4096);
    // A crash here: reopening truncates the tail.
    drop(st);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 8192 + 100);
    st.write_piece(1, &piece_buf(&st, &data, 1)).unwrap();
    // Reading while the file is still long: the padding must not leak into the piece.
    let mut buf = AlignedBuf::new(st.piece_buffer_len());
    st.read_piece(1, &mut buf).unwrap();
    assert_eq!(&buf[..100], &data[8192..]);
    st.write_piece(0, &piece_buf(&st, &data, 0)).unwrap();
    st.finish().unwrap();
    check_files(dir.path(), &layout, &data);
}

#[test]
fn read_zeroes_pad_bytes_even_when_the_file_is_long() {
    let dir = test_dir();
    let layout = Layout::new(8192, vec![file("a", 100), pad(8092), file("b", 10)]);
    let data = stream(&layout);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    write_all_pieces(&st, &data, 0..2);
    let mut buf = AlignedBuf::new(st.piece_buffer_len());
    buf.as_mut_slice().fill(0x55);
    st.read_piece(0, &mut buf).unwrap();
    assert!(buf[..8192] == data[..8192]);
    // What the reactor does: run the plan, then zero the gaps.
    let mut raw = vec![0x77u8; st.piece_buffer_len()];
    st.zero_gaps(0, &mut raw);
    assert!(raw[100..8192].iter().all(|&b| b == 0) && raw[..100].iter().all(|&b| b == 0x77));
    st.zero_gaps(0, &mut raw[..50]);
}

#[test]
fn recheck_finds_exactly_the_written_pieces() {
    for layout in [padded_layout(), foreign_layout()] {
        let dir = test_dir();
        let data = stream(&layout);
        let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
        let n = layout.piece_count();
        let written: Vec<u32> = (0..n).filter(|p| p % 3 != 1).collect();
        write_all_pieces(&st, &data, written.iter().copied());
        st.sync().unwrap();
        for threads in [1, 2, 5, 100] {
            let got = st.recheck(&hashes(&layout, &data), threads).unwrap();
            assert_eq!(got.ones().collect::<Vec<_>>(), written, "{threads} threads");
        }
        // Fewer hashes than pieces: the rest are not verified.
        let got = st.recheck(&hashes(&layout, &data)[..1], 2).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got.ones().collect::<Vec<_>>(), vec![0]);
        assert_eq!(st.recheck(&[], 2).unwrap().count_ones(), 0);
    }
}

#[test]
fn seed_mode_checks_files() {
    let dir = test_dir();
    let layout = Layout::new(4096, vec![file("a", 10), file("sub/b", 0), file("c", 5000)]);
    let err = Storage::open(dir.path(), layout.clone(), OpenMode::Seed).unwrap_err();
    assert!(
        matches!(&err, StorageError::Missing { path } if path.ends_with("a")),
        "{err}"
    );
    fs::write(dir.path().join("a"), [1u8; 10]).unwrap();
    let err = Storage::open(dir.path(), layout.clone(), OpenMode::Seed).unwrap_err();
    assert!(
        matches!(&err, StorageError::Missing { path } if path.ends_with("sub/b")),
        "{err}"
    );
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/b"), []).unwrap();
    fs::write(dir.path().join("c"), [2u8; 5001]).unwrap();
    let err = Storage::open(dir.path(), layout.clone(), OpenMode::Seed).unwrap_err();
    assert!(
        matches!(&err, StorageError::WrongSize { path, expected: 5000, actual: 5001 } if path.ends_with("c")),
        "{err}"
    );
    assert!(err.to_string().contains("c: is 5001 bytes"), "{err}");
    fs::write(dir.path().join("c"), [2u8; 5000]).unwrap();
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Seed).unwrap();
    assert_eq!(st.mode(), OpenMode::Seed);
    assert_eq!(
        st.file_paths(),
        vec![
            dir.path().join("a"),
            dir.path().join("sub/b"),
            dir.path().join("c")
        ]
    );
    let mut buf = AlignedBuf::new(st.piece_buffer_len());
    st.read_piece(0, &mut buf).unwrap();
    assert_eq!(&buf[..10], &[1u8; 10]);
    assert_eq!(&buf[10..4096], &[2u8; 4086][..]);
}

#[test]
fn download_keeps_existing_data_and_names_files_in_errors() {
    let dir = test_dir();
    let layout = Layout::new(8192, vec![file("a", 5000)]);
    fs::write(dir.path().join("a"), [9u8; 3000]).unwrap();
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    let on_disk = fs::read(dir.path().join("a")).unwrap();
    assert_eq!(on_disk.len(), 5000);
    assert!(on_disk[..3000].iter().all(|&b| b == 9) && on_disk[3000..].iter().all(|&b| b == 0));

    // Bad calls are errors, not panics.
    let small = AlignedBuf::new(100);
    let err = st.write_piece(0, &small).unwrap_err();
    assert!(err.to_string().contains("a:"), "{err}");
    assert!(st.read_piece(0, &mut AlignedBuf::new(0)).is_err());
    assert!(st.write_piece(7, &AlignedBuf::new(8192)).is_err());
    assert!(st.read_piece(2, &mut AlignedBuf::new(8192)).is_err());
    assert!(st.write_plan(2).is_empty());
    st.note_written(99);

    // A directory where a file should be.
    let layout = Layout::new(4096, vec![file("dir", 10)]);
    fs::create_dir(dir.path().join("dir")).unwrap();
    let err = Storage::open(dir.path(), layout, OpenMode::Download).unwrap_err();
    assert!(err.to_string().contains("dir"), "{err}");
}

#[test]
fn sync_leaves_no_cached_pages() {
    let dir = test_dir();
    let layout = foreign_layout();
    let data = stream(&layout);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    if (0..layout.files().len()).any(|i| !layout.files()[i].pad && st.fd_direct(i).is_none()) {
        eprintln!(
            "skipping: {} refuses O_DIRECT, so its pages are the storage",
            dir.path().display()
        );
        return;
    }
    st.mark_dont_need();
    write_all_pieces(&st, &data, 0..layout.piece_count());
    assert!(st
        .files
        .iter()
        .flatten()
        .any(|f| f.buffered_written.load(Ordering::Acquire)));
    st.sync().unwrap();
    for f in st.files.iter().flatten() {
        assert!(!f.written.load(Ordering::Acquire) && !f.buffered_written.load(Ordering::Acquire));
        let resident = crate::residency::resident_bytes(&f.path).unwrap();
        assert_eq!(
            resident,
            0,
            "{} keeps {resident} bytes cached",
            f.path.display()
        );
    }
    // The reactor's path: it runs the plans and reports the files it wrote.
    st.note_written(1);
    assert!(st.files[1]
        .as_ref()
        .unwrap()
        .written
        .load(Ordering::Acquire));
    st.sync().unwrap();
    assert!(!st.files[1]
        .as_ref()
        .unwrap()
        .written
        .load(Ordering::Acquire));
}

#[test]
fn buffered_fallback_round_trip_drops_its_pages() {
    for layout in [padded_layout(), foreign_layout()] {
        let dir = test_dir();
        let data = stream(&layout);
        let st = Storage::open_with(dir.path(), layout.clone(), OpenMode::Download, false, false)
            .unwrap();
        for p in 0..layout.piece_count() {
            assert!(st
                .write_plan(p)
                .iter()
                .chain(&st.read_plan(p))
                .all(|op| !op.direct));
        }
        write_all_pieces(&st, &data, 0..layout.piece_count());
        st.sync().unwrap();
        st.finish().unwrap();
        check_files(dir.path(), &layout, &data);
        assert!(st
            .recheck(&hashes(&layout, &data), 2)
            .unwrap()
            .is_complete());
        let fs_type = fs_is_tmpfs(dir.path());
        for f in st.files.iter().flatten() {
            let resident = crate::residency::resident_bytes(&f.path).unwrap();
            assert!(
                fs_type || resident == 0,
                "{} keeps {resident} bytes cached",
                f.path.display()
            );
        }
    }
}

#[test]
fn resident_storage_keeps_its_pages_cached() {
    let layout = padded_layout();
    let dir = test_dir();
    let data = stream(&layout);
    let st = Storage::open_resident(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    write_all_pieces(&st, &data, 0..layout.piece_count());
    st.sync().unwrap();
    st.finish().unwrap();
    check_files(dir.path(), &layout, &data);
    for f in st.files.iter().flatten() {
        let resident = crate::residency::resident_bytes(&f.path).unwrap();
        assert_eq!(resident, f.length, "{} is not all cached", f.path.display());
    }
}

/// tmpfs pages are the storage itself: DONTNEED cannot drop them.
fn fs_is_tmpfs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid value for statfs() to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, exclusively borrowed statfs.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type == libc::TMPFS_MAGIC
}

#[test]
fn zero_length_torrent_and_pad_only_piece() {
    let dir = test_dir();
    let st = Storage::open(
        dir.path(),
        Layout::new(4096, vec![file("e", 0)]),
        OpenMode::Download,
    )
    .unwrap();
    assert!(dir.path().join("e").exists());
    assert_eq!(st.recheck(&[], 1).unwrap().len(), 0);
    st.finish().unwrap();

    // A piece made only of a pad file reads as zeros.
    let layout = Layout::new(4096, vec![file("a", 4096), pad(4096), file("b", 1)]);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    assert!(st.read_plan(1).is_empty());
    let mut buf = AlignedBuf::new(4096);
    buf.as_mut_slice().fill(1);
    st.read_piece(1, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn unaligned_piece_length_is_all_buffered() {
    let dir = test_dir();
    let layout = Layout::new(5000, vec![file("a", 12000), file("b", 3)]);
    let data = stream(&layout);
    let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
    for p in 0..layout.piece_count() {
        assert!(st
            .write_plan(p)
            .iter()
            .chain(&st.read_plan(p))
            .all(|op| !op.direct));
    }
    write_all_pieces(&st, &data, 0..layout.piece_count());
    st.finish().unwrap();
    check_files(dir.path(), &layout, &data);
}

/// A layout from a list of (file length, pad the next file to a piece boundary).
fn layout_of(piece_length: u64, files: &[(u64, bool)]) -> Layout {
    let mut specs = Vec::new();
    let mut at = 0u64;
    for (i, &(len, pad_after)) in files.iter().enumerate() {
        specs.push(file(&format!("f{i}"), len));
        at += len;
        let rest = (piece_length - at % piece_length) % piece_length;
        if pad_after && rest > 0 && i + 1 < files.len() {
            specs.push(pad(rest));
            at += rest;
        }
    }
    Layout::new(piece_length, specs)
}

fn check_plan(st: &Storage, p: u32, read: bool) -> Result<(), TestCaseError> {
    let layout = st.layout();
    let ops = if read {
        st.read_plan(p)
    } else {
        st.write_plan(p)
    };
    let range = layout.piece_range(p).unwrap();
    let size = layout.piece_size(p);
    let gaps = layout.gaps(p);
    let in_gap = |a: u32, b: u32| gaps.iter().any(|g| g.start <= a && b <= g.end);
    let mut data: Vec<(u32, u32)> = Vec::new();
    for op in &ops {
        let f = &layout.files()[op.file];
        prop_assert!(!f.pad);
        prop_assert!(op.data_len > 0 && op.data_len <= op.len);
        prop_assert!(op.file_offset + u64::from(op.data_len) <= f.length);
        prop_assert!(op.buf_offset as usize + op.len as usize <= st.piece_buffer_len());
        prop_assert_eq!(
            range.start + u64::from(op.buf_offset),
            layout.file_start(op.file) + op.file_offset
        );
        if op.direct {
            prop_assert_eq!(Some(op.fd), st.fd_direct(op.file));
            prop_assert_eq!(op.file_offset % ALIGN_U64, 0);
            prop_assert_eq!(op.buf_offset % ALIGN_U32, 0);
            prop_assert_eq!(op.len % ALIGN_U32, 0);
        } else {
            prop_assert_eq!(Some(op.fd), st.fd_buffered(op.file));
            prop_assert_eq!(op.len, op.data_len);
            if !read {
                prop_assert!(st.files[op.file].as_ref().unwrap().buffered_prone);
            }
        }
        if op.len > op.data_len {
            // Only a padded tail goes past the file's end, by less than a block.
            prop_assert!(op.direct);
            prop_assert_eq!(op.file_offset + u64::from(op.data_len), f.length);
            prop_assert!(op.len - op.data_len < ALIGN_U32);
            if read {
                let a = op.buf_offset + op.data_len;
                let b = (op.buf_offset + op.len).min(size);
                prop_assert!(a >= b || in_gap(a, b), "read padding over data");
            }
        }
        data.push((op.buf_offset, op.buf_offset + op.data_len));
    }
    // The data ranges tile the piece minus its gaps.
    data.sort_unstable();
    let mut at = 0u32;
    let mut gi = gaps.iter().peekable();
    for (a, b) in data {
        if a > at {
            prop_assert_eq!(gi.next(), Some(&(at..a)));
        }
        prop_assert!(a >= at, "overlapping ops");
        at = b;
    }
    if size > at {
        prop_assert_eq!(gi.next(), Some(&(at..size)));
    }
    prop_assert_eq!(gi.next(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn plans_cover_pieces_exactly(
        files in proptest::collection::vec((0u64..40_000, any::<bool>()), 1..7),
        pl in prop_oneof![Just(4096u64), Just(8192), Just(16384), Just(65536), 1u64..20_000],
    ) {
        let layout = layout_of(pl, &files);
        prop_assume!(layout.piece_count() > 0);
        let dir = test_dir();
        let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
        for p in 0..layout.piece_count() {
            check_plan(&st, p, false)?;
            check_plan(&st, p, true)?;
        }
        // Files that start aligned (with aligned pieces and O_DIRECT) are written direct only.
        for p in 0..layout.piece_count() {
            for op in st.write_plan(p) {
                if pl % ALIGN_U64 == 0
                    && layout.file_start(op.file).is_multiple_of(ALIGN_U64)
                    && st.fd_direct(op.file).is_some()
                {
                    prop_assert!(op.direct);
                }
            }
        }
    }

    #[test]
    fn random_layouts_round_trip(
        files in proptest::collection::vec((0u64..30_000, any::<bool>()), 1..6),
        pl in prop_oneof![Just(4096u64), Just(8192), Just(32768), 1u64..20_000],
        seed in any::<u64>(),
    ) {
        let layout = layout_of(pl, &files);
        prop_assume!(layout.piece_count() > 0);
        let dir = test_dir();
        let data = stream(&layout);
        let st = Storage::open(dir.path(), layout.clone(), OpenMode::Download).unwrap();
        let n = layout.piece_count();
        // Some shuffled order.
        let mut order: Vec<u32> = (0..n).collect();
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        write_all_pieces(&st, &data, order.into_iter());
        st.finish().unwrap();
        check_files(dir.path(), &layout, &data);
        prop_assert!(st.recheck(&hashes(&layout, &data), 2).unwrap().is_complete());
    }
}
