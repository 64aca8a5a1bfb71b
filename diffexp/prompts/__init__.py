"""Prompts: prompt sets, the structured ``Prompt`` type and the prompt-weighting syntax."""
