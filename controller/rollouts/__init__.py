"""Rollouts: which devices get a version, and how far they got."""
