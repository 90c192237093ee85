"""Placeholder: builders for this family are being written."""
