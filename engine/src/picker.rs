//! Piece picking (sans-I/O). WORK IN PROGRESS.
