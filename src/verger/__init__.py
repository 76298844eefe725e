"""verger: a release-and-operations control plane for small SaaS teams."""

__version__ = "0.1.0"
