"""Populations: people as input at any size, the synthetic stand-in, population fitting, the vector store."""
