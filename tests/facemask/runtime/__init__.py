"""Tests of facemask.runtime."""
