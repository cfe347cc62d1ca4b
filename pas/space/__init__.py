"""Personality space: trait poles, MBTI types, groups, personas, and a vector from a spec."""
