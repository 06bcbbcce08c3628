"""Subscriptions, the RedMist profile, the output envelope and live state."""
