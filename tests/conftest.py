"""Shared fixtures: real peers live in tests/peers/ and are loaded here for every test module."""

pytest_plugins = ["tests.peers.fixtures"]
