"""Experiments that train models through the engine, each readable top to bottom."""
