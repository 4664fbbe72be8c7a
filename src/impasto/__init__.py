"""impasto."""
