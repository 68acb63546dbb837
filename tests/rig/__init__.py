"""The multi-host proof rig: network namespaces, faults, and drivers for real node processes."""
