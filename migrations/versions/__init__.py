"""Migration scripts (a package so setuptools ships them with the wheel)."""
