"""curvlab: first- and second-order optimization on convex models, measured."""

__version__ = "0.1.0"
