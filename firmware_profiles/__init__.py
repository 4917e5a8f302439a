"""Firmware profiles: one YAML per device class (schema: edgefleet.shared.profiles).

This folder installs as ``edgefleet.firmware_profiles`` so an agent installed from a wheel
finds the shipped profiles without a source checkout.
"""
