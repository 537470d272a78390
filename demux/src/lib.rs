//! braid-demux library.
