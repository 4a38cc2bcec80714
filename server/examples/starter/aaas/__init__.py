"""aaas examples (seed 001): `starter.aaas.client`, entries that drive a taskhub's aaas routes."""
