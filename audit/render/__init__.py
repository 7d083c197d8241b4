"""Rendering: terminal tables, JSON, CSV and Markdown, figures, progress."""
