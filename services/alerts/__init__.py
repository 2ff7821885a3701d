"""services.alerts package."""
