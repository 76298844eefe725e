"""The verger command line."""
