"""Vectors out of pas and into it: llama.cpp / repeng control vectors (GGUF), written and read with validation."""
