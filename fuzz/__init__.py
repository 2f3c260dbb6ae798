"""Fuzzing minihttp's parsers: the entry points (targets) and `make fuzz`'s coverage-guided runs."""
