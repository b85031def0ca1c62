"""ragkeeper knowledge."""
