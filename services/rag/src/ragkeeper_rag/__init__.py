"""ragkeeper rag."""
