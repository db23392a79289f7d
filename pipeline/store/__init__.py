"""Files on disk, each format's writer and reader side by side, written atomically."""
