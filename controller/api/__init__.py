"""edgefleet controller/api."""
