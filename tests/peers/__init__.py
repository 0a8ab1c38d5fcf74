"""Real peers (sshd, nginx, network namespaces), so tests exercise real protocols, not mocks."""
