"""Getting snapshots to the backend: request format, on-disk spool, poster thread."""
