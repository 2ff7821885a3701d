"""Tests of facemask.model.runtime."""
