"""DBMID models: configs, networks, and the registry of shipped weights."""

from .config import Architecture, ModelConfig
from .registry import LoadedModel, available, load_model

__all__ = ["Architecture", "LoadedModel", "ModelConfig", "available", "load_model"]
