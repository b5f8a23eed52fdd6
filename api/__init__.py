"""The HTTP API: validates, persists what the client sent, and tells the workflow."""
