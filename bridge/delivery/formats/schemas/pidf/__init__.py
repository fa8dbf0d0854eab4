"""Schema data files (see schemas/README.md); a package so the files ship in wheels."""
