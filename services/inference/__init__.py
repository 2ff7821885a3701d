"""services.inference package."""
