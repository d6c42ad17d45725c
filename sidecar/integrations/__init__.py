"""Worker-side integrations."""
