//! Command-line entry points (filled in below).
