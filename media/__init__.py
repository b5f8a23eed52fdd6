"""Attachments: what a file is (inspect) and where files live (storage)."""
