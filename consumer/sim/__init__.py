"""The simulator: a Keycloak-compatible IdP and a RedMist-contract hub replaying real races."""

# modules, imported on use: the simulator is not part of the daemon's runtime
__all__ = ["hub", "idp", "race", "ratelimit", "serving", "simulator"]
