"""inosync: keep remote copies of a directory tree in sync, with inotify and rsync."""

__version__ = "0.4.0"
