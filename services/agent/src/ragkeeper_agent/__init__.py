"""ragkeeper agent."""
