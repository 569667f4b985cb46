"""The tiny world: an embedded, offline digit world in the exact formats of the real models."""
