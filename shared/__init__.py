"""Pieces every part of edgefleet shares: wire protocol, topics, errors, histograms, hashing."""
