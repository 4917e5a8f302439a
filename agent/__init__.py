"""edgefleet agent."""
