"""Deployment helpers: certificates, a loopback SuperLink + SuperNodes launcher."""
