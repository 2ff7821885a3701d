"""Tests of facemask."""
