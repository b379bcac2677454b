"""Business logic. Services never see HTTP details."""
