"""Distributed training on Ray: runs on a laptop by default and unchanged inside a KubeRay RayJob."""

__version__ = "0.1.0"
