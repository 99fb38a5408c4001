"""Small helpers shared by the library modules."""
