"""edgefleet agent/runtime."""
