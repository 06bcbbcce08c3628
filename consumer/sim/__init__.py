"""The simulator: a Keycloak-compatible IdP and a RedMist-contract hub replaying real races."""
