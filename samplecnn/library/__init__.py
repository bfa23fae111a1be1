"""A music library in one SQLite file: index folders once, then search, find similar tracks and export offline.

- `index`: walk folders, decode in worker processes, tag in batches, one committed row per track (crash-safe).
- `store`: the database (schema, WAL, the only module that writes SQL).
- `search`: rank tracks by tag scores or by embedding similarity.
- `export`: CSV, JSON lines, Parquet.
- `tagwrite`: the decided tags into the files' own metadata, in place, with an exact undo;
  `integrity` (is a container whole, is the decoded audio unchanged) and `backup` (the copy kept during an edit,
  the undo patch) keep those writes safe.
"""
