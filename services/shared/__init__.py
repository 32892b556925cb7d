"""Plumbing shared by every careplan process: settings, clock, persistence."""
