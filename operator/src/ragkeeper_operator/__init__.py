"""ragkeeper operator."""
