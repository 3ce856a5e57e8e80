"""Test-only code several test modules share: toy models and scenes, golden fixtures, dataset files in
the official layouts, tiny model settings. Imported as ``helpers.<module>`` (tests/conftest.py puts tests/ on
the path); what many tests need as a ready object is a fixture in tests/conftest.py."""
