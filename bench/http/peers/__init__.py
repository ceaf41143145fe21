"""Peer products that linevault is measured against."""
