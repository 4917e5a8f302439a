"""edgefleet: ship signed vision models to fleets of edge devices.

The repository's top-level folders map into this namespace:
``edgefleet.shared`` (shared/), ``edgefleet.agent`` (agent/), ``edgefleet.controller``
(controller/).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
