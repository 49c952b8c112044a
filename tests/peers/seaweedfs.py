"""SeaweedFS fixtures (filled in by the object-store work)."""
