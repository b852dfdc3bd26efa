"""Model backends: plt (in process), hf, openai, replay."""
