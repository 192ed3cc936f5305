//! Thread-per-core io_uring reactor. WORK IN PROGRESS.
