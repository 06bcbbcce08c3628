"""Token providers, cache, discovery and the httpx.Auth adapter."""
