"""Spec-written peers for protocols whose real servers cannot be installed in the test environment."""
