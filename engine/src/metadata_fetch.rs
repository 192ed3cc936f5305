//! Fetching a torrent's info dict from peers over BEP 9 (for magnets). WORK IN PROGRESS.
